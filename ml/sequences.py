"""Sequence models (issue 24): each user's last events before the as-of date as model inputs, and a recurrent
network over them.

The window counts cannot tell a cart removed in the last session from one removed a month ago; the order of events
can. marts.fct_user_event_sequences holds, per (user, as-of date), the last N events strictly before the date, one
row per event, position 1 the most recent. `encode` turns them into integer token columns beside the aggregated
features (`seq_<field>_p<position>`), so a training or scoring frame carries them like any feature and every family,
calibration and registry step reads the same frame. `GRUClassifier` (PyTorch, the optional `deep` extra) reads the
aggregated features and the tokens: embeddings of the event type, hashed item and category, price bucket, time-gap
bucket and session start, a GRU over them in time order, its last state joined with the standardised features.

Its reasons are occlusions (`occlusion_reasons`): which of the user's recent event types, removed from the
sequence, lowers the probability the most.
"""

from __future__ import annotations

import hashlib
import time

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin

# What the sequence mart gives per event, and the token each becomes (0 is padding: no event at that position)
EVENT_CODES = {"view": 1, "cart": 2, "remove_from_cart": 3, "fav": 4, "purchase": 5, "checkout": 6, "return": 7}
TOKEN_FIELDS = ("event", "item", "category", "price", "gap", "session")
ITEM_BUCKETS = 4096      # items hashed into this many buckets (any catalogue size, no vocabulary to keep)
CATEGORY_BUCKETS = 512
PRICE_BUCKETS = 24       # the mart's log2 price bucket, +1 (0: padding), capped
GAP_BUCKETS = 24         # log2 of the seconds since the previous event, +2 (1: the user's first event), capped
SEQUENCE_PREFIX = "seq_"
SEQUENCE_LENGTH = 50     # events per sequence: the dbt var sequence_length the pipeline builds the mart with
SEQUENCE_GROUP = "recent_event_sequence"  # the token columns as one, where an importance shows them together


def token_column(field: str, position: int) -> str:
    return f"{SEQUENCE_PREFIX}{field}_p{position:02d}"


def token_columns(length: int) -> list[str]:
    return [token_column(f, p) for f in TOKEN_FIELDS for p in range(1, length + 1)]


def is_token(column: str) -> bool:
    return column.startswith(SEQUENCE_PREFIX)


def sequence_length(columns) -> int:
    return sum(1 for c in columns if c.startswith(f"{SEQUENCE_PREFIX}event_p"))


def _buckets(values: pd.Series, buckets: int) -> np.ndarray:
    """1..buckets: a stable hash of the id (the same in every process and release); 0 where there is none."""
    present = values.notna().to_numpy()
    hashed = np.zeros(len(values), dtype=np.int64)
    if present.any():
        hashed[present] = (pd.util.hash_array(values[present].astype(str).to_numpy()) % np.uint64(buckets)
                           ).astype(np.int64) + 1
    return hashed


def encode(events: pd.DataFrame, keys: pd.DataFrame, length: int) -> pd.DataFrame:
    """Token columns for each row of ``keys`` (user_id, as_of_date), in its order: the row's last ``length`` events
    (events: marts.fct_user_event_sequences rows). A row without events gets padding only. An event type outside
    the canonical ones is an error: the staging tests would have refused it."""
    unknown = sorted(set(events["event_type"].dropna()) - set(EVENT_CODES))
    if unknown:
        raise ValueError(f"event types the sequence encoder does not know: {', '.join(map(str, unknown))}")
    events = events[events["position"].between(1, length)]
    key_index = pd.MultiIndex.from_frame(keys[["user_id", "as_of_date"]].astype({"as_of_date": "datetime64[ns]"}))
    if key_index.has_duplicates:
        raise ValueError("encode: the keys repeat a (user_id, as_of_date)")
    rows = key_index.get_indexer(pd.MultiIndex.from_frame(
        events[["user_id", "as_of_date"]].astype({"as_of_date": "datetime64[ns]"})))
    events, rows = events[rows >= 0], rows[rows >= 0]
    seconds = pd.to_numeric(events["seconds_since_previous"], errors="coerce").to_numpy(dtype=float)
    gap = np.where(np.isnan(seconds), 1, 2 + np.floor(np.log2(1 + np.clip(np.nan_to_num(seconds), 0, None))))
    tokens = {
        "event": events["event_type"].map(EVENT_CODES).to_numpy(dtype=np.int64),
        "item": _buckets(events["item_id"], ITEM_BUCKETS),
        "category": _buckets(events["category_id"], CATEGORY_BUCKETS),
        "price": np.minimum(events["price_bucket"].fillna(0).to_numpy(dtype=np.int64) + 1, PRICE_BUCKETS - 1),
        "gap": np.minimum(gap.astype(np.int64), GAP_BUCKETS - 1),
        "session": np.where(events["opens_session"].fillna(True).to_numpy(dtype=bool), 2, 1),
    }
    position = events["position"].to_numpy(dtype=np.int64) - 1
    blocks = []
    for field in TOKEN_FIELDS:
        block = np.zeros((len(keys), length), dtype=np.int64)
        block[rows, position] = tokens[field]
        blocks.append(block)
    return pd.DataFrame(np.hstack(blocks), columns=token_columns(length), index=keys.index)


def epochs_within(model, epochs: int, started: float):
    """Epoch numbers 1..epochs while the next one, by the last one's time, would end within ``model.max_seconds``
    of ``started`` (None: no limit); sets ``model.stopped_for_time_`` when time, not the epochs, ended it."""
    model.stopped_for_time_, last = False, 0.0
    for epoch in range(1, epochs + 1):
        if model.max_seconds is not None and time.perf_counter() - started + last > model.max_seconds:
            model.stopped_for_time_ = True
            return
        begun = time.perf_counter()
        yield epoch
        last = time.perf_counter() - begun


def torch_missing() -> str | None:
    """Why the sequence families cannot run here, or None."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return "PyTorch is not installed: the sequence families need the deep extra (make install DEEP=1)"
    return None


class NetworkFromWeights:
    """A model whose torch module (``_network()``) is rebuilt from ``weights_``, numpy arrays, on first use and kept
    out of the pickle: the models are saved without torch objects and need PyTorch only to fit and to predict."""

    def _fitted_network(self):
        reason = torch_missing()
        if reason:
            raise RuntimeError(f"this model is a sequence model: {reason}")
        import torch

        network = getattr(self, "_network_cache", None)
        if network is None:
            network = self._network()
            network.load_state_dict({k: torch.as_tensor(v) for k, v in self.weights_.items()})
            network.eval()
            self._network_cache = network
        return network

    def _forget_caches(self) -> None:
        """Called when the weights change (a new fit): the network and whatever was computed with it go."""
        for name in [k for k in self.__dict__ if k.endswith("_cache")]:
            delattr(self, name)

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if not k.endswith("_cache")}


class GRUClassifier(NetworkFromWeights, ClassifierMixin, BaseEstimator):
    """A GRU over the token columns, its last state joined with the aggregated features, then a logistic layer.

    Early stopping: given ``eval_set`` (the tuning cutoff's rows), training stops when its log loss has not improved
    for ``patience`` epochs and keeps the best epoch's weights; ``best_epochs_`` is then the number of epochs a refit
    without an eval set should train (ml/train.py passes it on). The fitted weights are kept as numpy arrays, so
    that the model is saved and loaded like any scikit-learn model (skops) and needs PyTorch only to predict.

    Training starts from the logistic regression on the same aggregated features (L2, ``linear_c``) with the
    sequence's weights in the output layer at zero: epoch 0 is that linear model, and with an eval set the epochs
    are kept only where the sequence lowers its log loss (best_epochs_ may be 0). Trained from scratch, the network
    fell below the plain logistic regression on a few thousand rows (PR-AUC 0.554 against 0.581, issue 24).

    ``max_seconds`` caps an early-stopped fit's time (the training budget's share: ml/train.search): no epoch starts
    that the last one's time says would end past it, and the best epoch so far is kept (``stopped_for_time_``).
    Without it a first fit on GA's 100k rows ran 30 epochs, ~17 minutes against a budget of 120 s."""

    def __init__(self, hidden_size: int = 32, embedding_dim: int = 8, epochs: int = 30, batch_size: int = 256,
                 learning_rate: float = 3e-3, weight_decay: float = 1e-5, patience: int = 3, random_state: int = 0,
                 linear_c: float = 0.05, max_seconds: float | None = None):
        self.hidden_size, self.embedding_dim, self.epochs, self.batch_size = hidden_size, embedding_dim, epochs, \
            batch_size
        self.learning_rate, self.weight_decay, self.patience, self.random_state = learning_rate, weight_decay, \
            patience, random_state
        self.linear_c, self.max_seconds = linear_c, max_seconds

    # -- inputs ----------------------------------------------------------------------------------------------------

    def _split_columns(self, X: pd.DataFrame) -> tuple[list[str], int]:
        columns = list(X.columns)
        length = sequence_length(columns)
        if length == 0:
            raise ValueError("GRUClassifier needs the sequence token columns (ml.sequences.encode)")
        return [c for c in columns if not is_token(c)], length

    def _inputs(self, X: pd.DataFrame):
        import torch

        frame = X if isinstance(X, pd.DataFrame) else pd.DataFrame(X, columns=self.columns_)
        features = self.standardised(frame)
        # time order: the oldest position first, the most recent last (the GRU's last state)
        tokens = np.stack([frame[[token_column(f, p) for p in range(self.length_, 0, -1)]].to_numpy(dtype=np.int64)
                           for f in TOKEN_FIELDS], axis=-1)
        return torch.as_tensor(features, dtype=torch.float32), torch.as_tensor(tokens, dtype=torch.long)

    def standardised(self, frame: pd.DataFrame) -> np.ndarray:
        """The aggregated features as the network reads them: signed log, standardised, missing as the mean."""
        values = frame[self.feature_columns_].to_numpy(dtype=np.float64)
        values = np.sign(values) * np.log1p(np.abs(values))
        return np.nan_to_num((values - self.feature_mean_) / self.feature_scale_, nan=0.0)

    def _start_linear(self, network, features: np.ndarray, y: np.ndarray, weights: np.ndarray) -> None:
        """The output layer set to the logistic regression on the aggregated features, the sequence's share at 0."""
        import torch
        from sklearn.linear_model import LogisticRegression

        if len(np.unique(y)) < 2:
            return
        linear = LogisticRegression(C=self.linear_c, max_iter=1000).fit(features, y, sample_weight=weights)
        with torch.no_grad():
            network.head.weight.zero_()
            network.head.weight[0, self.hidden_size:] = torch.as_tensor(linear.coef_[0], dtype=torch.float32)
            network.head.bias[0] = float(linear.intercept_[0])

    def _network(self):
        import torch
        from torch import nn

        sizes = (len(EVENT_CODES) + 1, ITEM_BUCKETS + 1, CATEGORY_BUCKETS + 1, PRICE_BUCKETS, GAP_BUCKETS, 3)
        embedding_dim, hidden, n_features = self.embedding_dim, self.hidden_size, len(self.feature_columns_)

        class Network(nn.Module):
            def __init__(self):
                super().__init__()
                self.embeddings = nn.ModuleList(nn.Embedding(n, embedding_dim, padding_idx=0) for n in sizes)
                self.gru = nn.GRU(embedding_dim * len(sizes), hidden, batch_first=True)
                self.head = nn.Linear(hidden + n_features, 1)

            def forward(self, features, tokens):
                embedded = torch.cat([e(tokens[..., i]) for i, e in enumerate(self.embeddings)], dim=-1)
                _, last = self.gru(embedded)
                return self.head(torch.cat([last[-1], features], dim=1)).squeeze(1)

        return Network()

    # -- fit and predict -------------------------------------------------------------------------------------------

    def fit(self, X: pd.DataFrame, y, sample_weight=None, eval_set=None):
        reason = torch_missing()
        if reason:
            raise RuntimeError(reason)
        import torch

        started = time.perf_counter()
        self._forget_caches()
        X = pd.DataFrame(X)
        self.columns_ = list(X.columns)
        self.feature_names_in_ = np.asarray(self.columns_, dtype=object)
        self.n_features_in_ = len(self.columns_)
        self.feature_columns_, self.length_ = self._split_columns(X)
        raw = X[self.feature_columns_].to_numpy(dtype=np.float64)
        logged = np.sign(raw) * np.log1p(np.abs(raw))
        self.feature_mean_ = np.nan_to_num(np.nanmean(logged, axis=0)) if len(raw) else np.zeros(raw.shape[1])
        scale = np.nan_to_num(np.nanstd(logged, axis=0)) if len(raw) else np.ones(raw.shape[1])
        self.feature_scale_ = np.where(scale > 0, scale, 1.0)
        y = np.asarray(y, dtype=np.float32)
        self.classes_ = np.array([0, 1])
        weights = np.ones(len(y), dtype=np.float32) if sample_weight is None else np.asarray(sample_weight, np.float32)

        torch.manual_seed(self.random_state)
        generator = torch.Generator().manual_seed(self.random_state)
        network = self._network()
        features, tokens = self._inputs(X)
        self._start_linear(network, features.numpy(), y, weights)
        optimiser = torch.optim.AdamW(network.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        target, weight = torch.as_tensor(y), torch.as_tensor(weights)
        best, best_state, best_epoch, waited = np.inf, None, self.epochs, 0
        self.history_ = []  # with an eval set, history_[k]: its log loss after k epochs

        def kept() -> dict:
            return {k: v.detach().clone() for k, v in network.state_dict().items()}

        if eval_set is not None:
            eval_features, eval_tokens = self._inputs(pd.DataFrame(eval_set[0]))
            eval_y = torch.as_tensor(np.asarray(eval_set[1], dtype=np.float32))

            def eval_loss() -> float:
                network.eval()
                with torch.no_grad():
                    return float(torch.nn.functional.binary_cross_entropy_with_logits(
                        network(eval_features, eval_tokens), eval_y))

            # epoch 0, the linear model: what the sequence has to improve on
            best, best_state, best_epoch = eval_loss(), kept(), 0
            self.history_.append(best)
        for epoch in epochs_within(self, self.epochs, started):
            network.train()
            for batch in torch.randperm(len(y), generator=generator).split(self.batch_size):
                optimiser.zero_grad()
                loss = torch.nn.functional.binary_cross_entropy_with_logits(
                    network(features[batch], tokens[batch]), target[batch], weight=weight[batch])
                loss.backward()
                optimiser.step()
            if eval_set is None:
                continue
            loss_now = eval_loss()
            self.history_.append(loss_now)
            if loss_now < best - 1e-5:
                best, best_state, best_epoch, waited = loss_now, kept(), epoch, 0
            else:
                waited += 1
                if waited >= self.patience:
                    break
        if best_state is not None:
            network.load_state_dict(best_state)
        self.best_epochs_ = best_epoch
        self.weights_ = {k: v.detach().cpu().numpy() for k, v in network.state_dict().items()}
        return self

    def decision_function(self, X) -> np.ndarray:
        z, weight, offset = self.head(X)
        return z @ weight + offset

    def head(self, X) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The output layer as a linear map of the standardised features: (z: rows x features, the features'
        weights, offset: the sequence state's and the bias's share per row), decision_function = z @ w + offset.
        What ml/explain needs to move one feature without running the GRU again."""
        network = self._fitted_network()
        features, tokens = self._inputs(X)
        weight = network.head.weight.detach().numpy()[0].astype(np.float64)
        offset = self._states(network, tokens) @ weight[:self.hidden_size] \
            + float(network.head.bias.detach().numpy()[0])
        return features.numpy().astype(np.float64), weight[self.hidden_size:], offset

    def _states(self, network, tokens) -> np.ndarray:
        """The GRU's last state per row, kept for the last tokens it saw: importances and reasons move the
        aggregated features of the same rows many times, and the GRU is nearly all of a prediction's cost (the
        permutation importance of a 10k-row validation cutoff took 114 s of a 142 s search without it)."""
        import torch

        key = hashlib.blake2b(np.ascontiguousarray(tokens.numpy()), digest_size=16).digest()  # hashed in place
        cached = getattr(self, "_states_cache", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        states = []
        with torch.no_grad():
            for start in range(0, len(tokens), 4096):
                embedded = torch.cat([e(tokens[start:start + 4096][..., i])
                                      for i, e in enumerate(network.embeddings)], dim=-1)
                states.append(network.gru(embedded)[1][-1].numpy())
        state = np.concatenate(states).astype(np.float64) if states else np.zeros((0, self.hidden_size))
        self._states_cache = (key, state)
        return state

    def predict_proba(self, X) -> np.ndarray:
        p = 1.0 / (1.0 + np.exp(-self.decision_function(X)))
        return np.column_stack([1 - p, p])

    def predict(self, X) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)


def event_group(event_type: str) -> str:
    """The name a reason or an importance gives the events of one type in the sequence."""
    return f"recent_{event_type}_events"


EVENT_GROUPS = tuple(event_group(t) for t in EVENT_CODES)


def event_counts(X: pd.DataFrame) -> pd.DataFrame:
    """Per row, how many events of each type its sequence holds (the value a sequence reason shows)."""
    length = sequence_length(X.columns)
    events = X[[token_column("event", p) for p in range(1, length + 1)]].to_numpy()
    return pd.DataFrame({event_group(t): (events == code).sum(axis=1).astype(float) for t, code in EVENT_CODES.items()},
                        index=X.index)


def occlusion_effects(predict, X: pd.DataFrame, groups: list[str] | None = None) -> pd.DataFrame:
    """Per row and event type (``groups``: event_group names, default all): ``predict`` (rows -> scores) minus
    the score with the events of that type removed from the sequence (their tokens set to padding); 0 where the
    sequence holds none. The occlusion counterpart of ml/explain's one-feature counterfactuals."""
    length = sequence_length(X.columns)
    groups = list(EVENT_GROUPS) if groups is None else groups
    base = np.asarray(predict(X), dtype=float)
    event_columns = [token_column("event", p) for p in range(1, length + 1)]
    events = X[event_columns].to_numpy()
    out = pd.DataFrame(0.0, index=X.index, columns=groups)
    for name, code in EVENT_CODES.items():
        if event_group(name) not in groups:
            continue
        present = (events == code).any(axis=1)
        if not present.any():
            continue
        occluded = X[present].copy()
        mask = events[present] == code
        for field in TOKEN_FIELDS:
            columns = [token_column(field, p) for p in range(1, length + 1)]
            values = occluded[columns].to_numpy(copy=True)
            values[mask] = 0
            occluded[columns] = values
        drop = np.zeros(len(X))
        drop[present] = base[present] - np.asarray(predict(occluded), dtype=float)
        out[event_group(name)] = drop
    return out
