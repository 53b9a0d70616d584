"""``azureml``: mlws's Azure ML SDK v1 import layer (``mlws/v1/shim``), or the real SDK.

Like the real ``azureml`` (a pkgutil namespace package that several distributions fill), this
one extends its ``__path__`` with every ``azureml`` folder on ``sys.path``. When one of them
holds a real ``azureml/core`` (azureml-core installed in this interpreter), the layer steps
aside entirely: the real SDK wins, and no v1 name is half real, half mlws. Otherwise the layer's
own folder comes first.
"""

import os
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)  # noqa: F821 (a package's __path__)

_HERE = os.path.dirname(os.path.abspath(__file__))
_others = [p for p in __path__ if os.path.abspath(p) != _HERE]
if any(os.path.isfile(os.path.join(p, "core", "__init__.py")) for p in _others):
    __path__[:] = _others
    # The real package's own __init__ (just extend_path) did not run: this one did instead.
else:
    __path__[:] = [_HERE, *_others]
del _others
