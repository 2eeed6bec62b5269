import pytest

from fusion.common.errors import FusevalError
from fusion.merge.params import check_value, evaluate, layer_index, layer_position, resolve


def test_layer_index_and_position():
    assert layer_index("model.layers.3.mlp.up_proj.weight") == 3
    assert layer_index("transformer.h.11.attn.c_attn.weight") == 11
    assert layer_index("model.embed_tokens.weight") is None
    assert layer_position("model.layers.0.self_attn.q_proj.weight", 5) == 0.0
    assert layer_position("model.layers.4.self_attn.q_proj.weight", 5) == 1.0
    assert layer_position("model.layers.2.mlp.down_proj.weight", 5) == 0.5
    # outside the layers: t = 0 (mergekit plans embeddings, final norm and lm_head at t = 0)
    assert layer_position("model.norm.weight", 5) == 0.0
    assert layer_position("lm_head.weight", 5) == 0.0


def test_gradient_interpolation():
    g = [0.0, 1.0, 0.5]
    assert evaluate(g, "x", 0.0) == 0.0
    assert evaluate(g, "x", 0.25) == pytest.approx(0.5)
    assert evaluate(g, "x", 0.5) == pytest.approx(1.0)
    assert evaluate(g, "x", 0.75) == pytest.approx(0.75)
    assert evaluate(g, "x", 1.0) == pytest.approx(0.5)
    assert evaluate([0.2], "x", 0.7) == 0.2
    assert evaluate(0.3, "x", 0.7) == 0.3


def test_filters_first_match_wins_and_fall_through():
    v = [{"filter": "self_attn", "value": [0.0, 1.0]}, {"filter": "mlp", "value": 0.3}, {"value": 0.9}]
    assert evaluate(v, "model.layers.1.self_attn.q_proj.weight", 0.5) == pytest.approx(0.5)
    assert evaluate(v, "model.layers.1.mlp.up_proj.weight", 0.5) == 0.3
    assert evaluate(v, "model.norm.weight", 0.0) == 0.9
    # no match at this level: the key is left out, so a lower level (global, default) applies
    assert resolve({"t": [{"filter": "mlp", "value": 0.3}]}, "model.norm.weight", 0.0) == {}


def test_malformed_values_are_rejected():
    with pytest.raises(FusevalError, match="expected a number"):
        check_value({"a": 1}, "merge.yml: parameters.weight")
    with pytest.raises(FusevalError, match="needs 'value'"):
        check_value([{"filter": "mlp", "valu": 1}], "merge.yml: parameters.weight")
