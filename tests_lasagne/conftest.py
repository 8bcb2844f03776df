"""Runs PyPI Lasagne 0.1's own test suite against lasagne_caption's compat layer.

Not a test folder of this project (``pytest tests`` never sees it): ``make
lasagne-suite`` unpacks ``lasagne/tests`` of Lasagne 0.1's sdist into
``.venv/lasagne-0.1/`` and links this file beside it, so pytest loads it as
that suite's top conftest, before any of Lasagne's test modules.
"""
import pytest

import lasagne_caption  # noqa: F401  (the compat layer, before theano/lasagne)


def _variables_of_any_type():
    """``theano.Variable("myvariable")``, as Theano 0.7 allowed (Lasagne's test_helper).

    theano-pymc reads ``type.filter`` to check test values; a type without one
    gets a check that accepts any value. Only for this suite: the toolkit never
    builds such variables, so its own runs keep Theano's constructor as it is.
    """
    import functools
    import types

    import theano
    variable_cls = theano.graph.basic.Variable
    if hasattr(variable_cls.__init__, "__wrapped__"):
        return
    typed_init = variable_cls.__init__
    any_type = types.SimpleNamespace(filter=lambda value, *args, **kw: value)

    @functools.wraps(typed_init)
    def __init__(self, type, *args, **kwargs):
        if hasattr(type, "filter"):
            return typed_init(self, type, *args, **kwargs)
        typed_init(self, any_type, *args, **kwargs)
        self.type = type

    variable_cls.__init__ = __init__


_variables_of_any_type()

# theano-pymc has no `theano.sandbox.cuda` (Theano's old CUDA backend) on any
# machine; Lasagne 0.1's cuDNN/cuda-convnet layers and the tests that probe for
# them import it. Lasagne's own tests skip GPU modules whose import fails
# ("cuda_convnet not available"); a test that fails on this import is skipped
# the same way instead of counting as a failure.
CUDA_BACKEND = "theano.sandbox.cuda"


def needs_cuda_backend(error):
    name = getattr(error, "name", None) or ""
    return isinstance(error, ImportError) and (
        name == CUDA_BACKEND or name.startswith(CUDA_BACKEND + "."))


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem):
    try:
        return (yield)
    except ImportError as error:
        if needs_cuda_backend(error):
            pytest.skip("needs a GPU: %s (Theano's CUDA backend) is not in theano-pymc"
                        % error.name)
        raise


def pytest_configure(config):
    # Lasagne's conftest implements --runslow for this marker but does not declare it
    config.addinivalue_line("markers", "slow: Lasagne's examples; run with --runslow")
