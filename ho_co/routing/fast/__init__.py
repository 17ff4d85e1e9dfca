"""The lean CPU engine behind `model.policy.fast`: rl4co's MatNet policy with a faster POMO loop.

Same modules, parameters and math as rl4co's policy; only the decoding loop and a few CPU kernels
are new. The rest of the routing client reaches it through `ho_co.routing.policies`
(`build_policy(..., fast=...)`, which calls `make_fast`).

- loop.py: `FastMatNetPolicy`, the multi-start decoding loop and the tour pass that trains it;
- glimpse.py + glimpse_kernel.cpp: the pointer's narrow-head attention;
- pointer_tail.py + pointer_kernel.cpp: the pointer's clipping, mask and log-softmax;
- mixer.py + mixer_kernel.cpp: MatNet's mixed-score attention in the encoder;
- sampler.py + sampler_kernel.cpp: the rollout's multinomial draw;
- simd.h: the eight-float vectors the glimpse, pointer and mixer kernels share.

Each kernel is built for this CPU at first use (`ho_co.native`) and has an environment switch
(`HO_CO_FUSED_GLIMPSE`, `_POINTER`, `_MIXER`, `_SAMPLING`; "0" runs the torch path instead).
"""

from ho_co.routing.fast.loop import FastMatNetPolicy, make_fast

__all__ = ["FastMatNetPolicy", "make_fast"]
