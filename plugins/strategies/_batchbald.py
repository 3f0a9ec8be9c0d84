"""BatchBALD: a batch whose labels jointly tell the most about the model parameters."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from pydantic import Field

from plugins.strategies._bayesian import bald_scores, expected_entropy
from plugins.strategies._kernels import chunks, entropy, map_rows, rows_per_chunk
from plugins.strategies.base import BatchParams, Input, PoolInputs, Ranking, Strategy, batch_then_scores
from plugins.strategies.registry import register

_CACHE_BLOCK_MB = 4
# The batch counts as saturated once its information reaches this share of the ceiling log K.
SATURATION = 0.95


@dataclass(frozen=True)
class Configurations:
    """Label configurations of the chosen items, as the joint-entropy computation needs them."""

    weights: torch.Tensor  # (K, J): p(theta_k | configuration j); columns sum to 1 (0 where P(j) = 0)
    mass: torch.Tensor  # (J,): weight of configuration j in the expectation: P(j) exact, 1/M sampled
    entropy: float  # H(y_chosen): exact, or the importance estimate -1/M sum_m log P(yhat_m)


def exact_configurations(chosen: torch.Tensor) -> Configurations:
    """All C^B label configurations of the chosen items (B, K, C), in itertools.product order."""
    k = chosen.shape[1]
    products = torch.ones(k, 1, dtype=torch.float64, device=chosen.device)
    for item in chosen.to(torch.float64):
        products = (products[:, :, None] * item[:, None, :]).reshape(k, -1)
    total = products.sum(dim=0)
    prob = total / k
    weights = products / torch.where(total > 0, total, torch.ones_like(total))
    return Configurations(weights, prob, float(entropy(prob)))


def sampled_configurations(chosen: torch.Tensor, num_configs: int,
                           generator: torch.Generator) -> Configurations:
    """num_configs configurations of the chosen items (B, K, C) from their joint: k ~ U{1..K}, y_i ~ p_k."""
    k = chosen.shape[1]
    members = torch.randint(k, (num_configs,), generator=generator, device=chosen.device)
    log_q = torch.zeros(k, num_configs, dtype=torch.float64, device=chosen.device)
    for item in chosen.to(torch.float64):
        labels = torch.multinomial(item[members], 1, generator=generator).squeeze(1)
        log_q += torch.log(item[:, labels])
    log_prob = torch.logsumexp(log_q, dim=0) - math.log(k)
    mass = torch.full((num_configs,), 1.0 / num_configs, dtype=torch.float64, device=chosen.device)
    return Configurations(torch.softmax(log_q, dim=0), mass, float(-log_prob.mean()))


def joint_entropies(samples: torch.Tensor, configs: Configurations, memory_mb: int) -> torch.Tensor:
    """(N,): H(y_chosen, y_n) for every pool item n, as H(y_chosen) + E_config H(y_n | config)."""
    n, _, c = samples.shape
    weights = configs.weights.to(samples.dtype)
    mass = configs.mass.to(samples.dtype)
    out = torch.empty(n, dtype=samples.dtype, device=samples.device)
    # Blocks of a few MiB stay in cache: 2-3x faster than one large block of the same total work.
    step = rows_per_chunk(3 * c * weights.shape[1] * samples.element_size(), min(memory_mb, _CACHE_BLOCK_MB))
    for rows in chunks(n, step):
        predictive = torch.matmul(samples[rows].transpose(1, 2), weights)  # (rows, C, J): p(y_n | config j)
        out[rows] = entropy(predictive, dim=1) @ mass
    return out + configs.entropy


@dataclass(frozen=True)
class GreedyBatch:
    """What the greedy BatchBALD loop chose."""

    picked: list[int]  # pool positions, in pick order
    values: list[float]  # I(y_batch; theta) of the batch after each pick (exact or estimated)
    exact_steps: int  # how many picks enumerated every configuration
    last_exact: bool  # whether the last pick enumerated every configuration


def greedy_batchbald(samples: torch.Tensor, batch_size: int, exact_limit: int, num_configs: int,
                     generator: torch.Generator, memory_mb: int) -> GreedyBatch:
    """Pick min(batch_size, N) items one at a time, each maximising the batch's mutual information."""
    n, _, c = samples.shape
    conditional = expected_entropy(samples)
    picked: list[int] = []
    values: list[float] = []
    exact_steps, exact = 0, True
    for size in range(1, min(batch_size, n) + 1):
        chosen = samples[picked]
        exact = size == 1 or c**size <= exact_limit
        configs = (exact_configurations(chosen) if exact
                   else sampled_configurations(chosen, num_configs, generator))
        gain = joint_entropies(samples, configs, memory_mb) - conditional
        gain[picked] = -torch.inf
        best = int(torch.argmax(gain))
        values.append(float(gain[best]) - float(conditional[picked].sum()))
        picked.append(best)
        exact_steps += int(exact)
    return GreedyBatch(picked, values, exact_steps, exact)


def saturated_after(values: list[float], ceiling: float) -> int | None:
    """How many picks it took the batch's information to reach SATURATION x ceiling; None if it never did."""
    return next((i + 1 for i, v in enumerate(values) if v >= SATURATION * ceiling), None)


@register("batchbald")
class BatchBALD(Strategy):
    """BatchBALD (Kirsch, van Amersfoort & Gal, NeurIPS 2019), greedy: the first `batch_size` items.

    Step b adds argmax_n H(y_1..y_{b-1}, y_n) - E_k H(y_n | theta_k), i.e. maximises
    I(y_1..y_b; theta) = H(y_1..y_b) - sum_i E_k H(y_i | theta_k). The joint entropy is exact while
    C^b <= exact_limit (and always for the first pick), else estimated from num_configs sampled label
    configurations of the chosen items, importance-weighted (paper, appendix). The rest is ranked by BALD.

    With K equally weighted posterior samples, I(y_1..y_b; theta) <= H(theta) = log K: once a batch's
    information nears that ceiling, later picks gain almost nothing and are chosen on estimation noise.
    `info` reports the ceiling and the pick at which the batch reached SATURATION of it.
    """

    class Params(BatchParams):
        batch_size: int = Field(
            10, ge=1, description="items chosen jointly; the rest of the pool is ranked by BALD"
        )
        exact_limit: int = Field(
            4096, ge=1,
            description="enumerate all C^b label configurations of a b-item batch while C^b <= this",
        )
        num_configs: int = Field(
            2000, ge=1, description="sampled label configurations of the chosen items beyond exact_limit"
        )

    needs = frozenset({Input.SAMPLES})

    def _rank(self, pool: PoolInputs) -> Ranking:
        generator = torch.Generator(device=pool.samples.device)
        generator.manual_seed(int(self.generator().integers(2**62)))
        batch = greedy_batchbald(pool.samples, self.params.batch_size, self.params.exact_limit,
                                 self.params.num_configs, generator, self.params.memory_mb)
        scores = map_rows(bald_scores, pool.samples, self.params.memory_mb)
        k = pool.samples.shape[1]
        ceiling = math.log(k)
        return self._ranking(
            batch_then_scores(batch.picked, scores), scores,
            joint="exact" if batch.last_exact else "sampled", exact_steps=batch.exact_steps,
            batch_mutual_information=batch.values, information_ceiling=ceiling,
            saturated_after=saturated_after(batch.values, ceiling),
        )
