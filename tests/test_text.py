"""Text encoders (issue 25): the default TF-IDF + SVD encoder, fitted only on the texts it is given."""

import pickle

import numpy as np
import pandas as pd
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


# --- a local sentence-transformers model (the deep extra): a tiny random BERT written here, never downloaded

WORDS = ["works", "great", "love", "it", "stopped", "working", "returned", "waste", "of", "money", "strings", "cable", "sound"]


@pytest.fixture(scope="module")
def sentence_model(tmp_path_factory):
    pytest.importorskip("sentence_transformers", reason="the sentence-transformers encoder needs the deep extra")
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    root = tmp_path_factory.mktemp("text_model")
    bert = root / "bert"
    bert.mkdir()
    (bert / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(WORDS) + 5, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=64)).save_pretrained(bert)
    BertTokenizerFast(vocab_file=str(bert / "vocab.txt")).save_pretrained(bert)
    folder = root / "model"
    SentenceTransformer(modules=[Transformer(str(bert), max_seq_length=32), Pooling(16, "mean")]).save(str(folder))
    return folder


def test_a_local_sentence_model_encodes_reviews_travels_with_the_features_and_refuses_a_changed_folder(
        sentence_model, tmp_path):
    from ml.review_features import ReviewFeatures, load, review_text_columns, save
    from ml.text import SentenceEncoder
    from tests.test_review_features import _reviews

    encoder = SentenceEncoder(str(sentence_model), dimensions=3).fit(["works great", "waste of money", "cable"])
    encoded = encoder.transform(["love it", "", None])
    assert encoded.shape == (3, 3) and np.linalg.norm(encoded[0]) == pytest.approx(1.0)
    assert (encoded[1:] == 0).all()  # no text: no direction
    reviews = _reviews()
    features = ReviewFeatures(dimensions=2, text_model_dir=str(sentence_model)).fit(reviews, "2026-03-15")
    keys = reviews[["user_id"]].drop_duplicates().assign(as_of_date=pd.Timestamp("2026-03-15"))
    before = features.transform(reviews, keys)
    assert before[review_text_columns(2)].notna().all().all()
    reloaded = load(save(features, tmp_path / "review_features.skops"))  # the weights stay in the folder
    pd.testing.assert_frame_equal(reloaded.transform(reviews, keys), before)
    (sentence_model / "README.md").write_text("edited")  # any change to the folder: the encoding may differ
    with pytest.raises(ValueError, match="changed since this encoder was fitted"):
        reloaded.transform(reviews, keys)


def test_a_folder_that_is_no_sentence_model_is_refused_with_what_to_do(tmp_path):
    from ml.text import SentenceEncoder

    with pytest.raises(ValueError, match="not a sentence-transformers model folder"):
        SentenceEncoder(str(tmp_path), dimensions=2).fit(["some text"])


def test_the_content_recommender_can_encode_items_with_the_local_sentence_model(sentence_model):
    from ml.content import ContentBased

    texts = pd.Series({"a": "works great strings", "b": "cable sound", "c": "waste of money"})
    interactions = pd.DataFrame({"user_id": ["u1"], "item_id": ["a"], "weight": [1.0], "purchases": [1]})
    model = ContentBased(dimensions=2, text_model_dir=str(sentence_model)).fit(interactions, texts)
    listed = model.recommend(["u1"], k=3, new_only=True)
    assert sorted(listed.item_id) == ["b", "c"] and set(listed.reason) == {"described like a"}
