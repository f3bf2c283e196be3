"""A sequence recommender (issue 24): GRU4Rec-style next-item prediction over each user's items in time order.

The recommenders' interface gives a model one row per (user, item) before the cutoff, with the days since the user's
last interaction with it: each user's items ordered by that (oldest first; within a day, the lighter weight first)
are the sequence the network reads. The order is a day's resolution and each item appears once, at its latest
interaction: the sequence of *which items came after which*, not of every event (the event-level sequence mart,
marts.fct_user_event_sequences, serves the classification targets).

The network (Hidasi et al. 2016, with the cross-entropy over in-batch negatives of Hidasi & Karatzoglou 2018): an
embedding per item, a GRU over the sequence, and at each position a score for every item as the dot product of the
GRU's state with the item's embedding (tied input and output embeddings). Trained to predict each next item from the
items before it. A user's recommendations are the items whose embeddings best match the state after their whole
sequence, so a user the fit never saw is scored from their own rows at scoring time, without a refit. Reasons are
those of the factor models: "similar to <item>", the user's item whose embedding is nearest the recommended one.

Scoring reuses the factor models' machinery (`_Factors`): the state is the user's factor vector, the embeddings the
items'. PyTorch is needed to fit and to compute states (the `deep` extra); the weights are kept as numpy arrays.
"""

from __future__ import annotations

import time

import numpy as np

from ml.recommend import Catalogue, UserRows, _Factors
from ml.sequences import NetworkFromWeights, epochs_within, torch_missing


class GRU4Rec(NetworkFromWeights, _Factors):
    needs = "deep"  # left out, with torch_missing()'s reason, where PyTorch is not installed

    def __init__(self, factors: int = 64, length: int = 20, epochs: int = 10, batch_size: int = 256,
                 learning_rate: float = 3e-3, random_state: int = 0, max_items: int = 20_000,
                 max_seconds: float | None = None):
        self.factors, self.length, self.epochs, self.batch_size = factors, length, epochs, batch_size
        self.learning_rate, self.random_state, self.max_items = learning_rate, random_state, max_items
        self.max_seconds = max_seconds
        self.name = "gru4rec"

    # -- sequences ---------------------------------------------------------------------------------------------------
    def sequences(self, view: UserRows, rows: np.ndarray) -> np.ndarray:
        """rows x length: each row's last ``length`` items in the vocabulary (1-based token; 0 pads on the left),
        oldest first: ordered by recency (1 / (1 + days since)), then weight, then position."""
        recency = view.recency[rows].tocoo()
        weight = np.asarray(view.weight[rows][recency.row, recency.col]).ravel()
        token = self.token_[recency.col]
        keep = token > 0
        r, token, order_recency, order_weight = recency.row[keep], token[keep], recency.data[keep], weight[keep]
        order = np.lexsort((token, order_weight, order_recency, r))  # per row, oldest and lightest first
        r, token = r[order], token[order]
        counts = np.bincount(r, minlength=len(rows))
        ends = np.cumsum(counts)
        position_from_end = ends[r] - np.arange(len(r))  # 1 for a row's newest item
        kept = position_from_end <= self.length
        out = np.zeros((len(rows), self.length), dtype=np.int64)
        out[r[kept], self.length - position_from_end[kept]] = token[kept]
        return out

    # -- fit ---------------------------------------------------------------------------------------------------------
    def _network(self):
        import torch

        vocabulary, factors = len(self.vocabulary_) + 1, self.factors

        class Network(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.items = torch.nn.Embedding(vocabulary, factors, padding_idx=0)
                self.gru = torch.nn.GRU(factors, factors, batch_first=True)

            def forward(self, tokens):
                states, _ = self.gru(self.items(tokens))
                return states

        return Network()

    def _fit(self, catalogue: Catalogue) -> None:
        reason = torch_missing()
        if reason:
            raise RuntimeError(reason)
        import torch

        started = time.perf_counter()
        self._forget_caches()
        self._keep_popular(catalogue)
        kept = np.arange(len(catalogue.items)) if self.kept_ is None else self.kept_
        self.vocabulary_ = kept
        self.token_ = np.zeros(len(catalogue.items), dtype=np.int64)
        self.token_[kept] = np.arange(1, len(kept) + 1)
        sequences = self.sequences(catalogue.fitted, np.arange(len(catalogue.users)))
        trainable = sequences[(sequences > 0).sum(axis=1) >= 2]  # a next item to predict
        torch.manual_seed(self.random_state)
        generator = torch.Generator().manual_seed(self.random_state)
        network = self._network()
        optimiser = torch.optim.Adam(network.parameters(), lr=self.learning_rate)
        tokens = torch.as_tensor(trainable)
        # in-batch negatives are drawn in proportion to how often an item is a next item: without a correction the
        # model learns to push popular items down (logQ correction, Yi et al. 2019)
        counts = np.bincount(trainable[:, 1:][(trainable[:, 1:] > 0) & (trainable[:, :-1] > 0)],
                             minlength=len(kept) + 1).astype(np.float64)
        log_q = torch.as_tensor(np.log(np.maximum(counts, 1.0) / max(counts.sum(), 1.0)), dtype=torch.float32)
        self.epochs_trained_ = 0
        for _ in epochs_within(self, self.epochs if len(trainable) else 0, started):
            network.train()
            for batch in torch.randperm(len(tokens), generator=generator).split(self.batch_size):
                inputs, targets = tokens[batch, :-1], tokens[batch, 1:]
                states = network(inputs)
                real = (targets > 0) & (inputs > 0)
                if not bool(real.any()):
                    continue
                states, targets = states[real], targets[real]
                # every next item of the batch is a negative of the others (in-batch softmax)
                candidates, target_index = torch.unique(targets, return_inverse=True)
                logits = states @ network.items(candidates).T - log_q[candidates]
                loss = torch.nn.functional.cross_entropy(logits, target_index)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
            self.epochs_trained_ += 1
        self.weights_ = {k: v.detach().cpu().numpy() for k, v in network.state_dict().items()}
        factors = np.zeros((len(catalogue.items), self.factors), dtype=np.float32)  # items outside the vocabulary: 0
        factors[kept] = self.weights_["items.weight"][1:]
        self._use_item_factors(factors)
        self.user_factors_ = self._states(catalogue.fitted)

    # -- states --------------------------------------------------------------------------------------------------------
    def _states(self, view: UserRows, rows_per_batch: int = 4096) -> np.ndarray:
        """Each row's GRU state after its whole sequence (zeros for a row without items in the vocabulary)."""
        network = self._fitted_network()  # says what is missing without PyTorch
        import torch

        states = np.zeros((len(view.users), self.factors), dtype=np.float32)
        with torch.no_grad():
            for start in range(0, len(view.users), rows_per_batch):
                rows = np.arange(start, min(start + rows_per_batch, len(view.users)))
                sequences = torch.as_tensor(self.sequences(view, rows))
                # left-padded: the last position is every row's newest item; a row without one scores nothing
                states[rows] = (network(sequences)[:, -1] * (sequences > 0).any(dim=1, keepdim=True)).numpy()
        return states

    def _fold_in(self, view: UserRows) -> np.ndarray:
        return self._states(view)  # a sequence model needs no fold-in: the state after the user's items as they are
