"""Lean POMO decoding for rl4co's MatNet: the same policy, the same math, a faster loop.

rl4co's decoding loop pays, at every one of its N steps, for TensorDict bookkeeping (batchify,
unbatchify, `env.step`'s update), host syncs (`done.all()`, `td["i"].item()`, NaN and
feasibility asserts, boolean-mask indexing) and two matmuls that do not depend on the step.
With POMO's B x N rollouts of small kernels, that overhead, not the arithmetic, sets the
speed. `FastMatNetPolicy` keeps rl4co's modules, parameters (so checkpoints are
interchangeable), forward signature and outputs, and replaces only the multi-start loop:

- plain tensors in a [batch, start, ...] layout; the instance is never copied per start;
- everything that does not depend on the step is computed once per batch: the attention keys
  and values, the context projection split into its first-node and current-node halves
  (W [e_first; e_cur] = W_f e_first + W_c e_cur), and the pointer's output projection folded
  into the logit keys (logits = (W_o h) . k / sqrt(E) = h . (W_o^T k) / sqrt(E));
- a static loop of exactly N - 2 network steps with no host sync (the last node is forced: its
  log-probability is exactly 0, as in rl4co), the mask as one additive float tensor (0 or -inf:
  the attention and the logits add it, where a bool mask is converted by SDPA at every step and
  applied with `where`; the same values either way), the chosen
  log-probability gathered at once (no stored [steps, N] logits);
- in training the rollout runs without autograd and the log-likelihood comes from one pass over
  all steps of the chosen tours (`tour_logp`): large matmuls and one backward instead of N - 2
  small ones; on CPU the rollout's multinomial draws go through a small sampler kernel
  (`sampler.py`: the same generator use and indices, without exponential_'s scalar loop),
  the pointer's glimpse attention (50 keys, 16-wide heads) through a kernel built for that shape
  (`glimpse.py`: aten's flash attention's values to float rounding; with the query
  split into its first-node and current-node parts, the scores come from two tables made once
  per batch), the pointer's tail (tanh clipping, mask, temperature, log-softmax; in the pass,
  the chosen node's log-probability and its backward) through one pass per row
  (`pointer_tail.py`, to float rounding), and MatNet's mixer through a fused kernel
  (`mixer.py`);
- the step itself is one function of tensors (`pointer_step`), so on CUDA it and the encoder
  can be handed to `torch.compile` (opt-in: `compile="default"` or `"reduce-overhead"`, which
  adds CUDA graphs); the CPU path always stays eager.

Layers that are not a plain `nn.Linear` (HOLinear placed in the decoder) cannot be split or
folded; the step then calls them as rl4co does. Multi-start `actions=` evaluation (rl4co's
"evaluate" decoding of given tours, what teacher forcing trains on) needs no rollout at all: the
given tours go straight to the one pass (`tour_logp`). Anything else the lean loop does not cover
(another env, single-start or beam decoding, entropy, top-k/p) falls back to rl4co's own
forward, so the class is a drop-in for `AutoregressivePolicy`.
Sampling draws `torch.multinomial` over the same [start * batch, N] rows as rl4co, so with
the same seed the two policies sample the same tours.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import rl4co
import torch
from rl4co.envs.routing.atsp.env import ATSPEnv
from rl4co.models.common.constructive.autoregressive import AutoregressivePolicy
from rl4co.models.nn.env_embeddings.context import TSPContext
from rl4co.models.nn.env_embeddings.dynamic import StaticEmbedding
from rl4co.models.zoo.am.decoder import AttentionModelDecoder
from tensordict import TensorDict
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

from ho_co.problems.tours import tour_lengths
from ho_co.routing.fast.glimpse import (
    ReplayedAttention,
    SplitAttention,
    flash_forward,
    glimpse_attention,
    glimpse_kernel,
    split_forward,
)
from ho_co.routing.fast.mixer import fuse_mixers
from ho_co.routing.fast.pointer_tail import chosen_logp, pointer_tail
from ho_co.routing.fast.sampler import fused_sampling_applies, sampler_kernel, uniforms

# the rl4co whose decoder internals (cache layout, context and pointer modules, sampling rows) the
# lean loop reproduces; another version may change them without an error, so it is refused
RL4CO_VERSION = "0.7.0"
# rl4co decode types the lean loop runs, and how it picks an action in each
LEAN_DECODE = {"multistart_greedy": "greedy", "multistart_sampling": "sampling"}
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# decoding kwargs the lean loop understands; any other one sends the call to rl4co's loop
LEAN_KWARGS = {"decode_type", "num_starts", "temperature", "tanh_clipping", "mask_logits"}


class StepTables(NamedTuple):
    """Per-batch tensors the decoding steps read ([B, S, ...] per start, [B, N, ...] per node).

    query_cur is None when the context projection is not a plain Linear (then `row_emb`
    holds the row embeddings and the projection runs each step); logit_keys already contain the
    pointer's output projection and 1/sqrt(E) when that projection is a plain Linear.
    """

    query_first: Tensor | None  # [B, S, E]: W_f e_first + bias + graph context
    query_cur: Tensor | None  # [B, N, E]: W_c e_n for every node n
    row_emb: Tensor | None  # [B, N, E]: only for a non-Linear context projection
    keys: Tensor  # [B, H, N, d]
    values: Tensor  # [B, H, N, d]
    logit_keys: Tensor  # [B, N, E]
    logit_bias: Tensor | None  # [B, 1, N]: the folded output bias, if any
    score_first: Tensor | None = None  # [B, H, S, N]: the glimpse scores' query_first part (`split_scores`)
    score_cur: Tensor | None = None  # [B, H, N, N]: their query_cur part, one row per current node


def gather_rows(table: Tensor, index: Tensor) -> Tensor:
    """table [B, N, E], index [B, S] -> [B, S, E]: `table.gather(1, index expanded over E)` as one
    `index_select` of whole rows, which is several times faster on CPU, backward included."""
    b, n, e = table.shape
    rows = (index + torch.arange(b, device=index.device).unsqueeze(1) * n).flatten()
    return table.reshape(b * n, e).index_select(0, rows).view(b, -1, e)


def step_tables(decoder: AttentionModelDecoder, row_emb: Tensor, col_emb: Tensor, first: Tensor,
                split_scores: bool = False) -> StepTables:
    """What MatNet's decoder computes once per batch, plus the split and folded projections, and
    with `split_scores` the glimpse's score tables (see `SplitAttention`)."""
    glimpse_key, glimpse_val, logit_key = decoder.project_node_embeddings(col_emb).chunk(3, dim=-1)
    heads = decoder.pointer.num_heads
    split = lambda x: x.unflatten(-1, (heads, -1)).transpose(1, 2)  # [B, N, E] -> [B, H, N, d]
    graph_context = decoder.project_fixed_context(col_emb.mean(1)).unsqueeze(1) if decoder.use_graph_context else 0

    ctx = decoder.context_embedding.project_context
    query_first = query_cur = rows = None
    if type(ctx) is nn.Linear:
        w_first, w_cur = ctx.weight.chunk(2, dim=1)
        query_first = F.linear(gather_rows(row_emb, first), w_first, ctx.bias) + graph_context
        query_cur = F.linear(row_emb, w_cur)
    else:
        rows = row_emb
        if decoder.use_graph_context:
            query_first = graph_context.expand(-1, first.size(1), -1)

    out = decoder.pointer.project_out
    scale = 1.0 / math.sqrt(logit_key.size(-1))
    logit_bias = None
    if type(out) is nn.Linear:
        # logits = (W h + b) . k / sqrt(E) = h . (k W) / sqrt(E) + b . k / sqrt(E)
        logit_keys = torch.matmul(logit_key, out.weight) * scale
        if out.bias is not None:
            logit_bias = (torch.matmul(logit_key, out.bias) * scale).unsqueeze(1)
    else:
        logit_keys = logit_key
    keys = split(glimpse_key)
    score_first = score_cur = None
    if split_scores:  # scale * (q_first + q_cur) . k = scale * q_first . k + scale * q_cur . k
        glimpse_scale = 1.0 / math.sqrt(keys.size(-1))
        score_first = torch.matmul(split(query_first), keys.transpose(-1, -2)) * glimpse_scale
        score_cur = torch.matmul(split(query_cur), keys.transpose(-1, -2)) * glimpse_scale
    return StepTables(query_first, query_cur, rows, keys, split(glimpse_val), logit_keys, logit_bias,
                      score_first, score_cur)


def pointer_step(
    tables: StepTables,
    first: Tensor,
    current: Tensor,
    blocked: Tensor,
    context_proj: nn.Module | None,
    out_proj: nn.Module | None,
    sdpa_fn: Callable,
    mask_inner: bool,
    tanh_clipping: float,
    temperature: float,
) -> Tensor:
    """Log-probabilities [B, S, N] of the next node: MatNet's pointer attention for one step.

    first, current: [B, S] node indices; blocked: [B, S, N] float, 0 where a node may be visited
    and -inf where not (`additive_mask`).
    context_proj / out_proj are the decoder's layers when they could not be split or folded
    (None otherwise). Same operations as rl4co's decoder + `process_logits`.
    """
    if context_proj is None:
        query = tables.query_first + gather_rows(tables.query_cur, current)
    else:
        pair = torch.stack([gather_rows(tables.row_emb, first), gather_rows(tables.row_emb, current)], -2)
        query = context_proj(pair.flatten(-2))
        if tables.query_first is not None:
            query = query + tables.query_first
    return pointer_logp(tables, query, blocked, out_proj, sdpa_fn, mask_inner, tanh_clipping, temperature)


def split_pointer_step(tables: StepTables, current: Tensor, blocked: Tensor, split_logits: Callable,
                       tanh_clipping: float, temperature: float) -> Tensor:
    """`pointer_step` from the split score tables: `split_logits(tables, current, blocked)` gives the
    pointer's logits (`split_pointer_logits`, or a `RolloutAttention`'s `rollout_logits`)."""
    return pointer_tail(split_logits(tables, current, blocked), blocked, tanh_clipping, temperature)


def split_pointer_logits(tables: StepTables, nodes: Tensor, blocked: Tensor, out_proj: nn.Module | None) -> Tensor:
    """The pointer's logits from the split score tables, for a rollout step no gradient goes through."""
    return glimpse_logits(tables, split_glimpse(tables, nodes, blocked), out_proj)


def additive_mask(allowed: Tensor, dtype: torch.dtype) -> Tensor:
    """A bool mask (True: may be visited) as the float one the pointer adds: 0 or -inf."""
    zero, blocked = (torch.tensor(x, dtype=dtype, device=allowed.device) for x in (0.0, float("-inf")))
    return torch.where(allowed, zero, blocked)


def pointer_logits(tables: StepTables, query: Tensor, blocked: Tensor, out_proj: nn.Module | None, sdpa_fn: Callable,
                   mask_inner: bool) -> Tensor:
    """MatNet's pointer logits [B, Q, N] (before clipping and masking) for queries [B, Q, E] and
    additive masks [B, Q, N] (Q: one row per start for a decoding step, or per start and step for
    a whole tour). SDPA turns a bool mask into this float one itself."""
    heads = tables.keys.size(1)
    q = query.unflatten(-1, (heads, -1)).transpose(1, 2)  # [B, H, S, d]
    glimpse = sdpa_fn(q, tables.keys, tables.values, attn_mask=blocked.unsqueeze(1) if mask_inner else None)
    return glimpse_logits(tables, glimpse, out_proj)


def glimpse_logits(tables: StepTables, glimpse: Tensor, out_proj: nn.Module | None) -> Tensor:
    """The pointer's logits [B, Q, N] from its attention output [B, H, Q, d]."""
    b, h, s, d = glimpse.shape
    e = h * d
    glimpse = glimpse.transpose(1, 2).reshape(b, s, e)
    if out_proj is None:
        logits = torch.bmm(glimpse, tables.logit_keys.transpose(1, 2))
        if tables.logit_bias is not None:
            logits = logits + tables.logit_bias
        return logits
    return torch.bmm(out_proj(glimpse), tables.logit_keys.transpose(1, 2)) / math.sqrt(e)


def pointer_logp(tables: StepTables, query: Tensor, blocked: Tensor, out_proj: nn.Module | None, sdpa_fn: Callable,
                 mask_inner: bool, tanh_clipping: float, temperature: float) -> Tensor:
    """Log-probabilities [B, Q, N] of MatNet's pointer (see `pointer_logits`); without autograd on
    CPU, the clipping, mask, temperature and log-softmax run as one pass (`pointer_kernel.cpp`)."""
    return pointer_tail(pointer_logits(tables, query, blocked, out_proj, sdpa_fn, mask_inner), blocked,
                        tanh_clipping, temperature)


def tour_logp(tables: StepTables, tours: Tensor, context_proj: nn.Module | None, out_proj: nn.Module | None,
              sdpa_fn: Callable, mask_inner: bool, tanh_clipping: float, temperature: float) -> Tensor:
    """Log-probabilities [B, S, N - 2] of the decoding steps that chose `tours` [B, S, N].

    Step t (0-based) stands at node tours[..., t] with nodes tours[..., :t + 1] visited and
    picks tours[..., t + 1]: exactly `pointer_step`'s inputs, computed for all steps at once.
    """
    b, s, n = tours.shape
    steps = n - 2
    if steps <= 0:
        return tables.keys.new_zeros(b, s, 0)
    first, current, chosen = tours[..., :1], tours[..., :steps], tours[..., 1 : steps + 1]
    when = torch.empty_like(tours).scatter_(-1, tours, torch.arange(n, device=tours.device).expand(b, s, n))
    step_ids = torch.arange(steps, device=tours.device).view(1, 1, steps, 1)
    blocked = additive_mask((when.unsqueeze(2) > step_ids).flatten(1, 2), tables.keys.dtype)  # [B, S * steps, N]
    flat_cur = current.flatten(1)  # [B, S * steps]
    if tables.score_first is not None:  # sdpa_fn gives the logits (`RolloutAttention.tour_logits`)
        logits = sdpa_fn(tables, flat_cur, blocked)
        return chosen_logp(logits, blocked, chosen.flatten(1), tanh_clipping, temperature).view(b, s, steps)
    if context_proj is None:
        query = tables.query_first.unsqueeze(2) + gather_rows(tables.query_cur, flat_cur).view(b, s, steps, -1)
        query = query.flatten(1, 2)
    else:
        flat_first = first.expand(b, s, steps).flatten(1)
        pair = torch.stack([gather_rows(tables.row_emb, flat_first), gather_rows(tables.row_emb, flat_cur)], -2)
        query = context_proj(pair.flatten(-2))
        if tables.query_first is not None:
            query = (query.view(b, s, steps, -1) + tables.query_first.unsqueeze(2)).flatten(1, 2)
    logits = pointer_logits(tables, query, blocked, out_proj, sdpa_fn, mask_inner)
    return chosen_logp(logits, blocked, chosen.flatten(1), tanh_clipping, temperature).view(b, s, steps)


def split_scores_apply(decoder: AttentionModelDecoder, row_emb: Tensor) -> bool:
    """Whether the pointer's glimpse can run on split score tables (`SplitAttention`): its query
    splits (a plain Linear context projection), and the glimpse kernel takes it (float32 CPU, aten
    SDPA's masked attention, a head width the kernel is built for)."""
    pointer = decoder.pointer
    return (type(decoder.context_embedding.project_context) is nn.Linear
            and RolloutAttention.applies(pointer.sdpa_fn, pointer.mask_inner, row_emb.device, row_emb.dtype)
            and row_emb.size(-1) // pointer.num_heads in (8, 16, 32, 64) and glimpse_kernel() is not None)


def split_glimpse_forward(tables: StepTables, nodes: Tensor, blocked: Tensor) -> tuple[Tensor, Tensor]:
    """The glimpse attention [B, H, R, d] and log-sum-exps [B, H, R] of query rows whose scores are
    `tables.score_first[start] + tables.score_cur[node]` (nodes [B, R]; R / S rows per start, in
    order), masked by blocked [B, R, N]."""
    return split_forward(tables.score_first, tables.score_cur, nodes, tables.values, blocked.unsqueeze(1))


def split_glimpse(tables: StepTables, nodes: Tensor, blocked: Tensor) -> Tensor:
    """`split_glimpse_forward`'s attention alone: a rollout step no gradient goes through."""
    return split_glimpse_forward(tables, nodes, blocked)[0]


def split_tour_logits(tables: StepTables, nodes: Tensor, blocked: Tensor, out_proj: nn.Module | None) -> Tensor:
    """The pass's logits [B, R, N] on split score tables where no rollout ran (given tours): the
    glimpse kernel's forward over every row at once, and its backward through `SplitAttention`."""
    with torch.no_grad():
        out, logsumexp = split_glimpse_forward(tables, nodes, blocked)
    glimpse = SplitAttention.apply(tables.score_first, tables.score_cur, nodes.contiguous(), tables.values,
                                   blocked.unsqueeze(1), out, logsumexp)
    return glimpse_logits(tables, glimpse, out_proj)


class ReplayedLogits(torch.autograd.Function):
    """The pointer's logits glimpse . logit_keys (+ logit_bias) [B, R, N], forward given (the
    rollout's own logits: the very values it sampled from), backward as the bmm's."""

    @staticmethod
    def forward(ctx, glimpse: Tensor, logit_keys: Tensor, logit_bias: Tensor | None, logits: Tensor) -> Tensor:
        ctx.save_for_backward(glimpse, logit_keys)
        ctx.has_bias = logit_bias is not None
        return logits.detach()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        glimpse, logit_keys = ctx.saved_tensors
        d_bias = grad.sum(1, keepdim=True) if ctx.has_bias else None
        return torch.bmm(grad, logit_keys), torch.bmm(grad.transpose(1, 2), glimpse), d_bias, None


class RolloutAttention:
    """The rollout's glimpse attentions, kept for the one pass over the chosen tours.

    Step t's queries, keys, values and mask are exactly the pass's rows for step t, so the
    pass takes the rollout's outputs (and log-sum-exps) instead of computing them again and
    only runs the backward: one attention forward less per training step. With split score
    tables and a folded output projection, the rollout's logits are kept as well, which spares
    the pass its largest matmul. CPU only (the glimpse kernel and aten's CPU flash kernel return
    the log-sum-exp their backward needs).
    """

    def __init__(self, out_proj: nn.Module | None = None) -> None:
        self.out_proj = out_proj  # the pointer's output projection when not folded into the logit keys
        self.outs: list[Tensor] = []
        self.logsumexps: list[Tensor] = []
        self.logits: list[Tensor] = []

    @staticmethod
    def applies(sdpa_fn: Callable, mask_inner: bool, device: torch.device, dtype: torch.dtype) -> bool:
        return (sdpa_fn is F.scaled_dot_product_attention and mask_inner and device.type == "cpu"
                and dtype == torch.float32 and not torch.compiler.is_compiling())

    def rollout_sdpa(self, q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        return self.keep(*flash_forward(q, k, v, attn_mask))

    def rollout_logits(self, tables: StepTables, nodes: Tensor, blocked: Tensor) -> Tensor:
        """A rollout step's logits from the split score tables, its attention and logits kept."""
        logits = glimpse_logits(tables, self.keep(*split_glimpse_forward(tables, nodes, blocked)), self.out_proj)
        if self.out_proj is None:
            self.logits.append(logits)
        return logits

    def keep(self, out: Tensor, logsumexp: Tensor) -> Tensor:
        self.outs.append(out)
        self.logsumexps.append(logsumexp)
        return out

    def kept(self, shape: torch.Size) -> tuple[Tensor, Tensor]:
        """The kept outputs [B, H, S * steps, d] and log-sum-exps, rows ordered (start, step) as
        `tour_logp` flattens them."""
        # stacked as [B, S, steps, H, d] (each step's output is laid out [B, S, H, d]), viewed as
        # [B, H, S * steps, d]: the pass's transpose back to [B, S * steps, H * d] is then free
        out = torch.stack([o.transpose(1, 2) for o in self.outs], 2).flatten(1, 2).transpose(1, 2)
        logsumexp = torch.stack(self.logsumexps, 3).flatten(2, 3)
        if out.shape != shape:
            raise RuntimeError(f"the rollout kept attentions of shape {tuple(out.shape)}, the pass asks {tuple(shape)}")
        return out, logsumexp

    def tour_sdpa(self, q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        """The pass's attention on its queries [B, H, S * steps, d]."""
        return ReplayedAttention.apply(q, k, v, attn_mask, *self.kept(q.shape))

    def tour_logits(self, tables: StepTables, nodes: Tensor, blocked: Tensor) -> Tensor:
        """The pass's logits [B, S * steps, N] on split score tables, for nodes [B, S * steps]."""
        b, h, rows, d = (*tables.values.shape[:2], nodes.size(1), tables.values.size(-1))
        out, logsumexp = self.kept(torch.Size((b, h, rows, d)))
        glimpse = SplitAttention.apply(tables.score_first, tables.score_cur, nodes.contiguous(), tables.values,
                                       blocked.unsqueeze(1), out, logsumexp)
        if self.out_proj is not None:
            return glimpse_logits(tables, glimpse, self.out_proj)
        logits = torch.stack(self.logits, 2).flatten(1, 2)  # [B, S, steps, N] -> rows (start, step)
        return ReplayedLogits.apply(glimpse.transpose(1, 2).reshape(b, rows, h * d), tables.logit_keys,
                                    tables.logit_bias, logits)


def per_start_rows(x: Tensor) -> Tensor:
    """[B, S, ...] -> rl4co's multi-start layout [S * B, ...] (row s * B + b)."""
    return x.transpose(0, 1).reshape(-1, *x.shape[2:])


class FastMatNetPolicy(AutoregressivePolicy):
    """rl4co's MatNet policy with a lean multi-start decoding loop (see the module docstring).

    Build it around an existing policy's modules with `FastMatNetPolicy.from_policy(policy)`;
    the state dict is the same, so checkpoints load either way. `compile` (a `torch.compile`
    mode: "default", "reduce-overhead", "max-autotune"; None for eager) compiles the encoder
    and the decoding step when the batch is on CUDA.
    """

    def __init__(self, encoder: nn.Module, decoder: AttentionModelDecoder, env_name: str = "atsp",
                 compile: str | None = None, **kwargs):
        check_rl4co_version()
        check_decoder(decoder, env_name)
        super().__init__(encoder=encoder, decoder=decoder, env_name=env_name, **kwargs)
        fuse_mixers(self.encoder)  # same parameters; the fused CPU kernel where it applies
        self.compile = compile
        self._compiled: dict[str, Callable] = {}  # not modules: the state dict stays rl4co's

    def __getstate__(self) -> dict:
        """Compiled functions do not pickle (Lightning keeps the policy in its hparams): recompile."""
        return {**self.__dict__, "_compiled": {}}

    @classmethod
    def from_policy(cls, policy: AutoregressivePolicy, compile: str | None = None) -> FastMatNetPolicy:
        """The same encoder and decoder (shared, not copied) and decoding settings."""
        settings = {k: getattr(policy, k) for k in (
            "temperature", "tanh_clipping", "mask_logits", "train_decode_type", "val_decode_type", "test_decode_type")}
        return cls(policy.encoder, policy.decoder, env_name=policy.env_name, compile=compile, **settings)

    def lean_applies(self, td: TensorDict, env, decode_type: str, actions, return_entropy: bool, calc_reward: bool,
                     kwargs: dict) -> bool:
        """Whether this call is one the lean loop computes exactly like rl4co's (given `actions`,
        rl4co evaluates them whatever the decode type; `given_tours` checks them)."""
        num_starts = kwargs.get("num_starts")
        return (
            isinstance(env, ATSPEnv)
            and (decode_type in LEAN_DECODE or actions is not None)
            and not return_entropy
            and calc_reward
            and set(kwargs) <= LEAN_KWARGS
            and kwargs.get("mask_logits", self.mask_logits)
            and td.batch_dims == 1
            and (num_starts is None or num_starts > 1)
            and td["action_mask"].size(-1) >= 2
        )

    def forward(self, td: TensorDict, env=None, phase: str = "train", calc_reward: bool = True,
                return_actions: bool = True, return_entropy: bool = False, return_hidden: bool = False,
                return_init_embeds: bool = False, return_sum_log_likelihood: bool = True, actions=None,
                max_steps: int = 1_000_000, **decoding_kwargs) -> dict:
        decode_type = decoding_kwargs.get("decode_type") or getattr(self, f"{phase}_decode_type")
        lean = self.lean_applies(td, env, decode_type, actions, return_entropy, calc_reward, decoding_kwargs)
        tours = given_tours(td, env, actions, decoding_kwargs.get("num_starts")) if lean and actions is not None else None
        if tours is not None:
            return self.evaluate(td, env, tours, decoding_kwargs, return_actions, return_hidden, return_init_embeds,
                                 return_sum_log_likelihood)
        if not lean or actions is not None:
            return super().forward(td, env, phase=phase, calc_reward=calc_reward, return_actions=return_actions,
                                   return_entropy=return_entropy, return_hidden=return_hidden,
                                   return_init_embeds=return_init_embeds,
                                   return_sum_log_likelihood=return_sum_log_likelihood, actions=actions,
                                   max_steps=max_steps, **decoding_kwargs)
        hidden, init_embeds = self.compiled("encoder", self.encoder, td["action_mask"].device)(td)
        num_starts = decoding_kwargs.get("num_starts") or env.get_num_starts(td)
        tours, step_logp = self.decode(
            td, env, hidden, num_starts, LEAN_DECODE[decode_type],
            temperature=decoding_kwargs.get("temperature", self.temperature),
            tanh_clipping=decoding_kwargs.get("tanh_clipping", self.tanh_clipping),
        )
        if env.check_solution:
            env.check_solution_validity(td, per_start_rows(tours))
        return self.outputs(td, tours, step_logp, hidden, init_embeds, return_actions, return_hidden,
                            return_init_embeds, return_sum_log_likelihood)

    def evaluate(self, td: TensorDict, env, tours: Tensor, decoding_kwargs: dict, return_actions: bool,
                 return_hidden: bool, return_init_embeds: bool, return_sum_log_likelihood: bool) -> dict:
        """rl4co's multi-start evaluation of given tours [B, S, N] (`given_tours`): the encoder and
        the one pass over every step of the tours, with no rollout."""
        hidden, init_embeds = self.compiled("encoder", self.encoder, td["action_mask"].device)(td)
        row_emb, col_emb = hidden
        split = split_scores_apply(self.decoder, row_emb)
        tables = step_tables(self.decoder, row_emb, col_emb, tours[..., 0], split)
        if split and not all(t.dtype == torch.float32 for t in (tables.score_first, tables.score_cur, tables.values)):
            split, tables = False, tables._replace(score_first=None, score_cur=None)  # autocast: lower precision
        layers = unfolded_layers(self.decoder, tables)
        pointer = self.decoder.pointer
        attention = functools.partial(split_tour_logits, out_proj=layers[1]) if split else pointer.sdpa_fn
        step_logp = tour_logp(tables, tours, *layers, attention, pointer.mask_inner,
                              decoding_kwargs.get("tanh_clipping", self.tanh_clipping),
                              decoding_kwargs.get("temperature", self.temperature))
        return self.outputs(td, tours, step_logp, hidden, init_embeds, return_actions, return_hidden,
                            return_init_embeds, return_sum_log_likelihood)

    def outputs(self, td: TensorDict, tours: Tensor, step_logp: Tensor, hidden, init_embeds, return_actions: bool,
                return_hidden: bool, return_init_embeds: bool, return_sum_log_likelihood: bool) -> dict:
        """rl4co's output dict for tours [B, S, N] and their step log-probabilities [B, S, N - 2]."""
        out = {"reward": per_start_rows(-tour_lengths(td["cost_matrix"], tours))}
        if return_sum_log_likelihood:
            out["log_likelihood"] = per_start_rows(step_logp.sum(-1))
        else:  # rl4co's [S * B, N] per-step log-probabilities: 0 for the start and the forced last node
            zero = step_logp.new_zeros(step_logp.shape[:2] + (1,))
            out["log_likelihood"] = per_start_rows(torch.cat([zero, step_logp, zero], -1))
        if return_actions:
            out["actions"] = per_start_rows(tours)
        if return_hidden:  # what rl4co returns as "hidden": the decoder's cache
            out["hidden"] = self.decoder._precompute_cache(hidden)
        if return_init_embeds:
            out["init_embeds"] = init_embeds
        return out

    def decode(self, td: TensorDict, env, hidden: tuple[Tensor, Tensor], num_starts: int, mode: str,
               temperature: float, tanh_clipping: float) -> tuple[Tensor, Tensor]:
        """Multi-start rollouts: tours [B, S, N] and chosen log-probabilities [B, S, N - 2]."""
        row_emb, col_emb = hidden
        batch, num_loc = td["action_mask"].shape
        first = env.select_start_nodes(td, num_starts=num_starts).view(num_starts, batch).t()  # [B, S]
        split = split_scores_apply(self.decoder, row_emb)
        tables = step_tables(self.decoder, row_emb, col_emb, first, split)
        if split and not all(t.dtype == torch.float32 for t in (tables.score_first, tables.score_cur, tables.values)):
            split, tables = False, tables._replace(score_first=None, score_cur=None)  # autocast: lower precision
        layers = unfolded_layers(self.decoder, tables)
        pointer = self.decoder.pointer
        step = self.compiled("step", pointer_step, row_emb.device)

        settings = (pointer.mask_inner, tanh_clipping, temperature)
        # Training: the rollout only picks the tours, so it runs without autograd, and the
        # log-likelihood's graph comes from one pass over every step of the chosen tours at once
        # (the same function of the same inputs, on [B, S * (N - 2)] query rows instead of N - 2
        # steps of [B, S]: large matmuls and one backward instead of 48 small ones).
        tour_graph = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tables)
        no_grad = tour_graph or not torch.is_grad_enabled()  # the draws need no gradient
        rollout_sdpa = tour_sdpa = pointer.sdpa_fn
        if RolloutAttention.applies(pointer.sdpa_fn, pointer.mask_inner, row_emb.device, row_emb.dtype):
            if tour_graph:
                kept = RolloutAttention(layers[1])
                rollout_sdpa, tour_sdpa = (kept.rollout_logits, kept.tour_logits) if split else (kept.rollout_sdpa,
                                                                                               kept.tour_sdpa)
            else:  # no gradient through the rollout: the CPU kernel's forward alone
                rollout_sdpa = (functools.partial(split_pointer_logits, out_proj=layers[1]) if split
                                else glimpse_attention)
        with torch.no_grad() if tour_graph else contextlib.nullcontext():
            fused = no_grad and mode == "sampling" and fused_sampling_applies(row_emb.device, row_emb.dtype)
            blocked = row_emb.new_zeros(batch, num_starts, num_loc)
            blocked = blocked.scatter(-1, first.unsqueeze(-1), float("-inf"))
            current, tours, logps = first, [first], []
            for _ in range(num_loc - 2):
                if split:
                    logp = split_pointer_step(tables, current, blocked, rollout_sdpa, *settings[1:])
                else:
                    logp = step(tables, first, current, blocked, *layers, rollout_sdpa, *settings)
                if mode == "greedy":
                    current = logp.argmax(-1)
                elif fused and logp.dtype == torch.float32:  # multinomial's own draw, from the same uniforms (sampler_kernel.cpp)
                    current = sampler_kernel().sample_rows(logp, uniforms(num_starts * batch, num_loc, logp.device))
                else:  # the same multinomial rows as rl4co's Sampling: [S * B, N]
                    current = per_start_rows(logp).exp().multinomial(1).view(num_starts, batch).t()
                if not tour_graph:
                    logps.append(logp.gather(-1, current.unsqueeze(-1)).squeeze(-1))
                tours.append(current)
                blocked = blocked.scatter(-1, current.unsqueeze(-1), float("-inf"))
            last = blocked.argmax(-1)  # the one node left (0 against -inf): probability 1
            if mode == "sampling":  # rl4co draws it anyway; drawing too keeps the two RNG streams in step
                if fused:
                    uniforms(num_starts * batch, num_loc, blocked.device)  # what that draw takes from the generator
                else:
                    per_start_rows(blocked).exp().multinomial(1)  # probabilities 1 and 0, as rl4co's
            tours.append(last)
            tours = torch.stack(tours, -1)
        if tour_graph:
            step_logp = tour_logp(tables, tours, *layers, tour_sdpa, *settings)
        else:
            step_logp = torch.stack(logps, -1) if logps else row_emb.new_zeros(batch, num_starts, 0)
        return tours, step_logp

    def compiled(self, name: str, fn: Callable, device: torch.device) -> Callable:
        """`fn` through torch.compile on CUDA when asked (compiled once, reused); else `fn`."""
        if self.compile is None or device.type != "cuda":
            return fn
        if name not in self._compiled:
            self._compiled[name] = torch.compile(fn, mode=self.compile, dynamic=False)
        return self._compiled[name]


def unfolded_layers(decoder: AttentionModelDecoder, tables: StepTables) -> tuple[nn.Module | None, nn.Module | None]:
    """The context and output projections a step must call itself (None: split or folded into `tables`)."""
    out = decoder.pointer.project_out
    return (None if tables.query_cur is not None else decoder.context_embedding.project_context,
            None if type(out) is nn.Linear else out)


def given_tours(td: TensorDict, env, actions: Tensor, num_starts: int | None) -> Tensor | None:
    """The tours [B, S, N] that rl4co's multi-start evaluation decodes from `actions`, or None
    where the lean pass does not reproduce it. As in rl4co, the start nodes are the env's
    (`select_start_nodes`: row s * B + b starts at node s) and `actions` [S * B, N - 1] are the
    nodes after them; rl4co decodes multi-start only when num_starts > 1 is given. Actions that
    do not complete a tour are refused here (rl4co's loop runs past their end: an IndexError)."""
    batch, num_loc = td["action_mask"].shape
    if num_starts is None or num_starts < 2 or actions.shape != (num_starts * batch, num_loc - 1):
        return None
    first = env.select_start_nodes(td, num_starts=num_starts).view(num_starts, batch, 1)
    tours = torch.cat([first, actions.view(num_starts, batch, num_loc - 1)], -1).transpose(0, 1)
    nodes = torch.arange(num_loc, device=tours.device)
    bad = (tours.sort(-1).values != nodes).any(-1).t().flatten().nonzero()  # rows s * B + b
    if bad.numel():
        raise ValueError(f"actions: row {int(bad[0])} does not complete a tour from its start node "
                         f"{int(first.flatten()[bad[0]])} ({bad.numel()} such rows)")
    return tours


def check_rl4co_version() -> None:
    """The lean loop reads rl4co's internals: refuse another rl4co than the one it reproduces."""
    if rl4co.__version__ != RL4CO_VERSION:
        raise RuntimeError(
            f"ho_co.routing.fast reproduces rl4co {RL4CO_VERSION}'s MatNet decoding loop, but rl4co "
            f"{rl4co.__version__} is installed: install rl4co=={RL4CO_VERSION}, or set model.policy.fast=false "
            "to decode with rl4co's own loop")


def check_decoder(decoder: nn.Module, env_name: str) -> None:
    """The lean loop reproduces MatNet's ATSP/TSP decoder only; say so for anything else."""
    if env_name != "atsp":
        raise ValueError(f"the fast MatNet policy decodes rl4co's 'atsp' env (TSP/ATSP as matrices), not {env_name!r}")
    if not isinstance(decoder, AttentionModelDecoder):
        raise TypeError(f"the fast MatNet policy needs rl4co's MatNet decoder, got {type(decoder).__name__}")
    if not isinstance(decoder.dynamic_embedding, StaticEmbedding) or not isinstance(decoder.context_embedding, TSPContext):
        raise TypeError(
            "the fast MatNet policy needs the static TSP/ATSP decoder embeddings (StaticEmbedding, TSPContext), got "
            f"{type(decoder.dynamic_embedding).__name__}, {type(decoder.context_embedding).__name__}"
        )


def make_fast(policy: nn.Module, fast: bool | str = True) -> FastMatNetPolicy:
    """The fast policy around `policy`'s modules: what `build_policy(..., fast=...)` returns.

    fast: True for the eager lean loop, or a torch.compile mode ("default", "reduce-overhead",
    "max-autotune") to also compile the encoder and the step on CUDA.
    """
    if not isinstance(policy, AutoregressivePolicy):
        raise TypeError(f"fast decoding wraps an rl4co AutoregressivePolicy (MatNet), got {type(policy).__name__}")
    if fast is not True and fast not in COMPILE_MODES:
        raise ValueError(f"fast must be true or a torch.compile mode {COMPILE_MODES}, got {fast!r}")
    return FastMatNetPolicy.from_policy(policy, compile=None if fast is True else fast)
