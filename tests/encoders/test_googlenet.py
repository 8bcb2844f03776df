"""BVLC GoogLeNet (Lasagne Recipes layout) with random weights; the safe loader."""
import pickle

import numpy as np
import pytest

from lasagne_caption.errors import UserError
from lasagne_caption.encoders import get_encoder
from lasagne_caption.encoders import googlenet as G

# (pool_proj, 1x1, 3x3_reduce, 3x3, 5x5_reduce, 5x5) and input channels, as in
# the recipe; written out here independently of the module.
MODULES = [(192, 32, 64, 96, 128, 16, 32), (256, 64, 128, 128, 192, 32, 96),
           (480, 64, 192, 96, 208, 16, 48), (512, 64, 160, 112, 224, 24, 64),
           (512, 64, 128, 128, 256, 24, 64), (512, 64, 112, 144, 288, 32, 64),
           (528, 128, 256, 160, 320, 32, 128), (832, 128, 256, 160, 320, 32, 128),
           (832, 128, 384, 192, 384, 48, 128)]


def known_layout():
    """Shapes of 'param values' in blvc_googlenet.pkl, in order."""
    shapes = [(64, 3, 7, 7), (64,), (64, 64, 1, 1), (64,), (192, 64, 3, 3), (192,)]
    for cin, pp, c1, r3, c3, r5, c5 in MODULES:
        shapes += [(c1, cin, 1, 1), (c1,),            # 1x1
                   (r3, cin, 1, 1), (r3,),            # 3x3_reduce
                   (c3, r3, 3, 3), (c3,),             # 3x3
                   (r5, cin, 1, 1), (r5,),            # 5x5_reduce
                   (c5, r5, 5, 5), (c5,),             # 5x5
                   (pp, cin, 1, 1), (pp,)]            # pool_proj
    return shapes + [(1024, 1000), (1000,)]


@pytest.fixture(scope="module")
def random_params():
    rng = np.random.RandomState(0)
    return [(rng.randn(*s) * (0.01 if len(s) > 1 else 0.1)).astype(np.float32)
            for s in known_layout()]


def test_param_shapes_and_order():
    import lasagne
    net = G.build_model()
    params = lasagne.layers.get_all_params(net["prob"])
    assert len(params) == 116
    assert [p.get_value().shape for p in params] == known_layout()
    assert G.expected_param_shapes() == known_layout()
    assert "loss3/classifier" in net and "pool5/7x7_s1" in net
    assert net["inception_4c/output"].output_shape[1] == 512


@pytest.fixture
def googlenet_file(random_params, tmp_path):
    """A blvc_googlenet.pkl in the Lasagne Recipes format, with random weights."""
    blob = {"param values": random_params, "synset words": ["w%d" % i for i in range(1000)],
            "mean value": np.array([104.0, 117.0, 123.0])}
    path = tmp_path / "blvc_googlenet.pkl"
    with open(path, "wb") as f:
        pickle.dump(blob, f, protocol=2)
    return path


def test_random_weights_forward(random_params, googlenet_file):
    enc = get_encoder("googlenet", googlenet_file)
    assert enc.synset_words[3] == "w3"
    img = np.random.RandomState(1).randint(0, 256, (2, 224, 224, 3)).astype(np.uint8)
    codes = enc.forward(img)
    assert codes["logits"].shape == (2, 1000) and codes["pool"].shape == (2, 1024)
    assert np.isfinite(codes["logits"]).all()
    # logits = pool @ W + b of loss3/classifier
    np.testing.assert_allclose(codes["logits"], codes["pool"] @ random_params[-2] + random_params[-1],
                               rtol=1e-3, atol=1e-3)


def test_random_weights_load(random_params, googlenet_file):
    enc = get_encoder("googlenet", googlenet_file)
    assert enc.synset_words[3] == "w3"
    np.testing.assert_array_equal(enc.net["loss3/classifier"].W.get_value(), random_params[-2])
    x = enc.preprocess(np.full((1, 224, 224, 3), [110, 120, 130], np.uint8))
    np.testing.assert_allclose(x[0, :, 0, 0], [130 - 104, 120 - 117, 110 - 123])


def test_missing_file_says_where_to_get_it(tmp_path):
    with pytest.raises(UserError) as exc:
        get_encoder("googlenet", tmp_path / "blvc_googlenet.pkl")
    msg = str(exc.value)
    assert "does not exist" in msg and "blvc_googlenet.pkl" in msg and "https://" in msg
    assert "\n" not in msg


class Evil(object):
    def __reduce__(self):
        return (print, ("pwned",))


def test_restricted_unpickler_refuses_code(tmp_path):
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump({"param values": [Evil()]}, f)
    with pytest.raises(UserError, match="refusing to load builtins.print"):
        G.load_pickle(path)
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="junk.pkl is not a GoogLeNet weights pickle"):
        G.load_pickle(junk)


def test_wrong_shapes(tmp_path, random_params):
    path = tmp_path / "short.pkl"
    with open(path, "wb") as f:
        pickle.dump({"param values": random_params[:-2]}, f)
    with pytest.raises(UserError, match="114 parameter arrays, GoogLeNet needs 116"):
        get_encoder("googlenet", path)


@pytest.fixture(scope="module")
def googlenet(random_params):
    """GoogLeNet with random weights (no file), compiled once for this module."""
    return G.GoogLeNetEncoder(param_values=random_params).compile()


def test_taps_through_the_loop(googlenet, random_params):
    assert googlenet.taps == ("logits", "pool")
    assert googlenet.tap_shapes == {"logits": (1000,), "pool": (1024,)}
    assert googlenet.default_batch_size == 16
    img = np.random.RandomState(2).randint(0, 256, (3, 224, 224, 3)).astype(np.uint8)
    codes = googlenet.encode(img, batch_size=2, progress=False)
    assert {t: a.shape for t, a in codes.items()} == {"logits": (3, 1000), "pool": (3, 1024)}
    assert codes.kept == [0, 1, 2]
    pool = googlenet.forward(img, taps="pool")
    assert list(pool) == ["pool"]
    scale = float(np.abs(pool["pool"]).max())
    np.testing.assert_allclose(codes["pool"], pool["pool"], rtol=0, atol=1e-5 * scale)
