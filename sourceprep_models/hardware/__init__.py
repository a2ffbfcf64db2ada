"""What this machine offers for keeping models resident: OS, CPU, RAM, GPUs and a memory budget.

``probe()`` never raises; anything it cannot read shows up in ``Hardware.unknowns`` with a reason.
Pass a fake ``ProbeSystem`` to drive it from recorded outputs.
"""

from ._probe import GPU_RESERVE_BYTES, probe
from ._records import GPU, Hardware, Unknown
from ._system import CommandError, ProbeSystem

__all__ = ["GPU", "GPU_RESERVE_BYTES", "CommandError", "Hardware", "ProbeSystem", "Unknown", "probe"]
