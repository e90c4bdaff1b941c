"""The one bridge between tf-slim 1.1.0 and TensorFlow 2.15 (and the hook that keeps OD API
model builds from downloading backbone weights on their own: :mod:`odpipe.detect.backbones`).

tf-slim (used by the OD API's ``TfExampleDecoder``) calls ``control_flow_ops.case`` and
``control_flow_ops.cond``; TF 2.15 moved them to ``control_flow_case`` and ``cond`` without
leaving aliases, so decoding a TFRecord fails with an AttributeError. Importing this module
(every odpipe module that touches the OD API does) puts the aliases back, once.
"""

from tensorflow.python.ops import cond as _cond
from tensorflow.python.ops import control_flow_case as _control_flow_case
from tensorflow.python.ops import control_flow_ops as _control_flow_ops

if not hasattr(_control_flow_ops, "case"):
    _control_flow_ops.case = _control_flow_case.case
if not hasattr(_control_flow_ops, "cond"):
    _control_flow_ops.cond = _cond.cond

# Imported here, with the bridge every OD API user of odpipe imports, so that no model build
# anywhere in odpipe can miss it.
from odpipe.detect import backbones as _backbones  # noqa: E402,F401
