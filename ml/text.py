"""Text encoders (issue 25): review text and item descriptions as a few dense dimensions, for point-in-time
features and content-based recommendations.

An encoder is an unfitted scikit-learn transformer: fitted only on the texts the caller gives it (text written
before the training cutoff, never after), it maps any text to ``dimensions`` columns, and is pickled with the model
version that reads its columns, so that scoring encodes as training did. The default needs no download: TF-IDF over
words and word pairs, reduced by a truncated SVD (latent semantic analysis), rows scaled to unit length. A missing or
empty text encodes as zeros (no direction), which the features keep apart from a text by its count.

``SentenceEncoder`` uses a sentence-transformers model from a local folder instead (the ``deep`` extra; settings:
``text_model_dir``), reduced to ``dimensions`` by a PCA fitted on the same texts. The folder is read, never
downloaded: the Hugging Face hub is switched off while it loads. Its weights are not pickled with the encoder: the
encoder keeps the folder's path and a checksum of its files, and refuses to encode once the folder has changed,
since a changed model would not encode as training did.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import PCA, TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import normalize

TEXT_PREFIX = "text_dim_"


def text_columns(dimensions: int) -> list[str]:
    return [f"{TEXT_PREFIX}{d:02d}" for d in range(1, dimensions + 1)]


def _texts(values) -> list[str]:
    return ["" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in values]


class TfidfSvdEncoder(TransformerMixin, BaseEstimator):
    """TF-IDF (words and word pairs, sublinear term frequency, terms in at least ``min_df`` texts, at most
    ``max_terms`` of them) reduced to ``dimensions`` by a truncated SVD; each row scaled to unit length.

    With fewer distinct terms or texts than ``dimensions`` the SVD keeps what there is and the remaining columns are zero,
    so that the encoder always gives ``dimensions`` columns (the feature names do not depend on the corpus)."""

    def __init__(self, dimensions: int = 16, min_df: int = 2, max_terms: int = 50_000, random_state: int = 0):
        self.dimensions, self.min_df, self.max_terms, self.random_state = dimensions, min_df, max_terms, random_state

    def fit(self, texts, y=None):
        documents = [t for t in _texts(texts) if t.strip()]
        if not documents:
            raise ValueError("TfidfSvdEncoder: no text to fit on (every text is missing or empty)")
        self.vectorizer_ = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, strip_accents="unicode",
                                           min_df=min(self.min_df, len(documents)), max_features=self.max_terms)
        matrix = self.vectorizer_.fit_transform(documents)
        # plain ints, not numpy scalars: skops saves each numpy scalar of a dict as an object of its own (50,000
        # terms made a 100 MB file that took minutes to write)
        self.vectorizer_.vocabulary_ = {term: int(index) for term, index in self.vectorizer_.vocabulary_.items()}
        # TruncatedSVD needs fewer components than terms, and finds no more than there are texts
        self.components_kept_ = max(0, min(self.dimensions, matrix.shape[1] - 1, len(documents)))
        self.svd_ = (TruncatedSVD(self.components_kept_, random_state=self.random_state).fit(matrix)
                     if self.components_kept_ else None)
        self.n_documents_ = len(documents)
        return self

    def transform(self, texts) -> np.ndarray:
        texts = _texts(texts)
        out = np.zeros((len(texts), self.dimensions))
        if self.svd_ is not None and texts:
            reduced = self.svd_.transform(self.vectorizer_.transform(texts))
            out[:, :reduced.shape[1]] = normalize(reduced)
        return out

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        return np.asarray(text_columns(self.dimensions), dtype=object)

    def frame(self, texts, index=None) -> pd.DataFrame:
        """The encoding as a frame with the encoder's column names."""
        return pd.DataFrame(self.transform(texts), columns=text_columns(self.dimensions), index=index)


def folder_checksum(folder: Path) -> str:
    """SHA-256 over a folder's files (relative paths and contents, in sorted order)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


class SentenceEncoder(TransformerMixin, BaseEstimator):
    """A local sentence-transformers model's embeddings, reduced to ``dimensions`` by a PCA, rows scaled to unit
    length. ``model_dir``: the folder ``SentenceTransformer.save`` wrote (copied from a machine with internet)."""

    BATCH = 64

    def __init__(self, model_dir: str = "", dimensions: int = 16, random_state: int = 0):
        self.model_dir, self.dimensions, self.random_state = model_dir, dimensions, random_state

    def _model(self):
        model = getattr(self, "_loaded", None)
        if model is not None:
            return model
        folder = Path(self.model_dir)
        if not (folder / "modules.json").is_file():
            raise ValueError(f"text_model_dir {folder}: not a sentence-transformers model folder (no modules.json); "
                             "copy one saved by SentenceTransformer.save, or leave the setting empty for TF-IDF")
        os.environ["HF_HUB_OFFLINE"] = "1"  # a local folder, never a download at run time
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as missing:
            raise ImportError("text_model_dir is set but sentence-transformers is not installed: it comes with the "
                              "deep extra (make install DEEP=1, or pip install 'shopcast[deep]')") from missing
        self._loaded = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
        return self._loaded

    def _embed(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self._model().encode(texts, batch_size=self.BATCH, show_progress_bar=False,
                                               convert_to_numpy=True), dtype=float)

    def fit(self, texts, y=None):
        documents = [t for t in _texts(texts) if t.strip()]
        if not documents:
            raise ValueError("SentenceEncoder: no text to fit on (every text is missing or empty)")
        self.checksum_ = folder_checksum(Path(self.model_dir))
        embedded = self._embed(documents)
        self.components_kept_ = max(0, min(self.dimensions, embedded.shape[1], len(documents) - 1))
        self.pca_ = PCA(self.components_kept_, random_state=self.random_state).fit(embedded) \
            if self.components_kept_ else None
        self.n_documents_ = len(documents)
        return self

    def transform(self, texts) -> np.ndarray:
        texts = _texts(texts)
        out = np.zeros((len(texts), self.dimensions))
        present = np.array([bool(t.strip()) for t in texts], dtype=bool)
        if self.pca_ is None or not present.any():
            return out
        checksum = folder_checksum(Path(self.model_dir))
        if checksum != self.checksum_:
            raise ValueError(f"the text model in {self.model_dir} changed since this encoder was fitted (checksum "
                             f"{checksum[:12]} against {self.checksum_[:12]}): it would not encode as training did; "
                             "restore the folder, or retrain")
        reduced = self.pca_.transform(self._embed([t for t, p in zip(texts, present) if p]))
        out[present, :reduced.shape[1]] = normalize(reduced)
        return out

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_loaded", None)  # the weights stay in the folder: the encoder keeps its path and checksum
        return state

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        return np.asarray(text_columns(self.dimensions), dtype=object)


def text_encoder(dimensions: int, model_dir: str | None = None, max_terms: int = 50_000, random_state: int = 0):
    """The encoder the settings ask for: a local sentence-transformers model where ``model_dir`` is set, else
    TF-IDF with a truncated SVD."""
    if model_dir:
        return SentenceEncoder(str(model_dir), dimensions, random_state)
    return TfidfSvdEncoder(dimensions=dimensions, max_terms=max_terms, random_state=random_state)
