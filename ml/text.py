"""Text encoders (issue 25): review text and item descriptions as a few dense dimensions, for point-in-time
features and content-based recommendations.

An encoder is an unfitted scikit-learn transformer: fitted only on the texts the caller gives it (text written
before the training cutoff, never after), it maps any text to ``dimensions`` columns, and is pickled with the model
version that reads its columns, so that scoring encodes as training did. The default needs no download: TF-IDF over
words and word pairs, reduced by a truncated SVD (latent semantic analysis), rows scaled to unit length. A missing or
empty text encodes as zeros (no direction), which the features keep apart from a text by its count.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import TruncatedSVD
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
