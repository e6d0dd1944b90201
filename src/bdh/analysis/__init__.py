"""Interpretability analyses of BDH checkpoints.

- `capture`: activations through forward hooks on the model's probe modules.
- `sparsity`: active fractions per layer / head / token and their distribution.
- `state`: the recurrent state rho over a prompt (norm, effective rank, bytes).
- `graph`: the neuron-neuron graph G = E D_x per head: tails, degrees, hubs, modularity.
- `monosemantic`: neurons and synapses selective for concept groups (Mann-Whitney).
- `memory`: measured bytes of BDH's state vs a Transformer's KV cache as context grows.
- `report`: all of it for one checkpoint as JSON + PNG (`bdh analyze`).
"""

from bdh.analysis.capture import Activations, capture_activations, capture_mlp_activations
from bdh.analysis.graph import GraphStats, graph_stats, model_graph_stats, neuron_graph
from bdh.analysis.memory import max_context, measure_state_memory
from bdh.analysis.monosemantic import (
    DEFAULT_CONCEPT_GROUPS,
    MonosemanticResult,
    mann_whitney_greater,
    monosemanticity,
    parse_groups,
    selectivity_analysis,
)
from bdh.analysis.sparsity import SparsityStats, sparsity_stats
from bdh.analysis.state import (
    StateTrajectory,
    effective_rank,
    numerical_rank,
    state_trajectory,
)
from bdh.registry import tensor_nbytes

__all__ = [
    "DEFAULT_CONCEPT_GROUPS",
    "Activations",
    "GraphStats",
    "MonosemanticResult",
    "SparsityStats",
    "StateTrajectory",
    "capture_activations",
    "capture_mlp_activations",
    "effective_rank",
    "graph_stats",
    "mann_whitney_greater",
    "max_context",
    "measure_state_memory",
    "model_graph_stats",
    "monosemanticity",
    "neuron_graph",
    "numerical_rank",
    "parse_groups",
    "selectivity_analysis",
    "sparsity_stats",
    "state_trajectory",
    "tensor_nbytes",
]
