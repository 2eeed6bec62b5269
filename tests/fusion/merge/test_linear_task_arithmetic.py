import numpy as np
import pytest

from fusion.common.errors import FusevalError
from tests.fusion.merge import npref
from tests.fusion.merge.conftest import call


def test_linear_matches_weighted_average(triple):
    base, a, b = triple
    out, _ = call("linear", None, [a, b], [{"weight": 0.3}, {"weight": 0.9}])
    np.testing.assert_allclose(out, npref.linear([a, b], [0.3, 0.9]), rtol=1e-12)
    np.testing.assert_allclose(out, (0.3 * a + 0.9 * b) / 1.2, rtol=1e-12)


def test_linear_unnormalized_and_single_model(triple):
    base, a, b = triple
    out, _ = call("linear", None, [a, b], [{"weight": 0.3}, {"weight": 0.9}], normalize=False)
    np.testing.assert_allclose(out, 0.3 * a + 0.9 * b, rtol=1e-12)
    out, _ = call("linear", None, [a], [{"weight": 2.0}])
    np.testing.assert_allclose(out, a, rtol=1e-12)


def test_linear_zero_weight_sum_is_an_error(triple):
    base, a, b = triple
    with pytest.raises(FusevalError, match="sum to 0"):
        call("linear", None, [a, b], [{"weight": 1.0}, {"weight": -1.0}])


def test_task_arithmetic_formula(triple):
    base, a, b = triple
    out, _ = call("task_arithmetic", base, [a, b], [{"weight": 0.7}, {"weight": 0.4}], **{"lambda": 1.5})
    np.testing.assert_allclose(out, npref.task_arithmetic(base, [a, b], [0.7, 0.4], lam=1.5), rtol=1e-12)
    np.testing.assert_allclose(out, base + 1.5 * (0.7 * (a - base) + 0.4 * (b - base)), rtol=1e-12)


def test_task_arithmetic_all_zero_deltas_give_base(triple):
    base, _, _ = triple
    out, _ = call("task_arithmetic", base, [base.copy(), base.copy()], [{"weight": 1.0}, {"weight": 1.0}])
    np.testing.assert_array_equal(out, base)


def test_weight_is_required():
    from pydantic import ValidationError

    from fusion.merge.registry import get_method

    with pytest.raises(ValidationError):
        get_method("task_arithmetic").model_params()
