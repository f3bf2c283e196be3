"""Text encoders (issue 25): the default TF-IDF + SVD encoder, fitted only on the texts it is given."""

import pickle

import numpy as np
import pytest

from ml.text import TfidfSvdEncoder, text_columns

STRINGS = ["these guitar strings sound bright", "bright strings, my guitar sounds great",
           "strings for an acoustic guitar, bright sound", "the guitar strings broke, bright but short lived"]
CABLES = ["the cable hums with noise", "noisy cable, the hum never stops", "a cable without hum or noise",
          "cheap cable full of noise and hum"]


def test_texts_on_one_topic_encode_closer_than_texts_on_another_and_rows_have_unit_length():
    encoder = TfidfSvdEncoder(dimensions=4, min_df=1).fit(STRINGS + CABLES)
    encoded = encoder.transform(STRINGS + CABLES)
    assert encoded.shape == (8, 4)
    np.testing.assert_allclose(np.linalg.norm(encoded, axis=1), 1.0)
    similarity = encoded @ encoded.T
    within = np.mean([similarity[i, j] for block in (range(4), range(4, 8)) for i in block for j in block if i != j])
    across = np.mean([similarity[i, j] for i in range(4) for j in range(4, 8)])
    assert within > across + 0.3, (within, across)


def test_missing_text_and_words_the_fit_never_saw_encode_as_zeros_and_columns_do_not_depend_on_the_corpus():
    encoder = TfidfSvdEncoder(dimensions=16, min_df=1).fit(STRINGS[:2])  # a handful of terms: fewer than 16
    frame = encoder.frame([None, "", float("nan"), "entirely unseen vocabulary", STRINGS[0]])
    assert list(frame.columns) == text_columns(16) == list(encoder.get_feature_names_out())
    assert (frame.iloc[:4] == 0).all().all()  # only the fitted vocabulary counts: later words add nothing
    assert np.linalg.norm(frame.iloc[4]) == pytest.approx(1.0)
    assert (frame.iloc[:, encoder.components_kept_:] == 0).all().all() and encoder.components_kept_ < 16


def test_the_encoder_pickles_with_the_model_and_encodes_the_same_after_loading():
    encoder = TfidfSvdEncoder(dimensions=3, min_df=1).fit(STRINGS + CABLES)
    loaded = pickle.loads(pickle.dumps(encoder))
    np.testing.assert_array_equal(loaded.transform(CABLES), encoder.transform(CABLES))
    with pytest.raises(ValueError, match="no text to fit on"):
        TfidfSvdEncoder().fit([None, "  "])
