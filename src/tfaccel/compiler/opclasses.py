"""The op classes the compiler's stages agree on, in one table (no TensorFlow).

Why one table: placement, the IR's op counting, the partitioner's size rule, the pipeline-core cost model
and ``--fp32-cast`` each need to know which ops are graph inputs, which only move data, which are
matrix multiplications. Kept as sets in five modules, they overlapped without saying how (the size rule's
ten heavy ops, the cost model's seven, ``--fp32-cast``'s eight). Here each class is named once, a wider
class is the union of narrow ones, and every stage imports the classes it means.

Each class is a ``frozenset`` of TensorFlow op type names (``NodeDef.op``), except
:data:`UNPLACEABLE_DTYPES`, which names dtypes.
"""

from __future__ import annotations

__all__ = [
    "COMPUTE_HEAVY_OPS",
    "CONSTANT_OPS",
    "CONV_OPS",
    "DATAFLOW_CONTROL_OPS",
    "DATAFLOW_MERGE_OPS",
    "EINSUM_OPS",
    "FORWARDING_OPS",
    "GRAPH_INPUT_OPS",
    "MATMUL_OPS",
    "ORDERING_OPS",
    "STRUCTURAL_OPS",
    "TRANSPOSED_CONV_OPS",
    "UNCOUNTED_OPS",
    "UNPLACEABLE_DTYPES",
    "VARIABLE_READ_OPS",
]

#: How the caller's tensors enter the graph: fed by the runtime at every call, so never placed.
GRAPH_INPUT_OPS = frozenset({"Placeholder"})

#: Nodes that only order others through control edges: nothing to compute, nothing to place.
ORDERING_OPS = frozenset({"NoOp"})

#: Constants are copied into each subgraph that reads them instead of being placed: a copy costs nothing
#: to rebuild, a tensor crossing a subgraph's boundary costs a copy on every call.
CONSTANT_OPS = frozenset({"Const"})

#: Ops that always stay where they are (placement's first rule): graph inputs, ordering nodes, constants.
STRUCTURAL_OPS = GRAPH_INPUT_OPS | ORDERING_OPS | CONSTANT_OPS

#: Ops that pass their inputs through unchanged: never worth a line in a summary of refused ops.
FORWARDING_OPS = frozenset({"Identity", "IdentityN"})

#: Reading a variable moves data; frozen graphs rarely keep one, but one that does computes nothing there.
VARIABLE_READ_OPS = frozenset({"ReadVariableOp"})

#: Ops that move or hold data without computing: neither counted in ``on_neuron_ratio`` nor in a
#: subgraph's effective size (the reference's contract lists Placeholder, Identity, ReadVariableOp and NoOp;
#: Const is copied wherever it is needed, so it belongs here too).
UNCOUNTED_OPS = STRUCTURAL_OPS | FORWARDING_OPS | VARIABLE_READ_OPS

#: Matrix multiplications whose first input's last dimension is the contracted one (the pipeline-core
#: cost model counts their multiply-adds from it).
MATMUL_OPS = frozenset({"MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3"})

#: A contraction given by an equation: as heavy as a matmul, but its contracted dimension is not at a
#: fixed place, so the cost model counts it by its output only.
EINSUM_OPS = frozenset({"Einsum"})

#: Forward convolutions, their kernel the second input (the cost model multiplies by its window size).
CONV_OPS = frozenset({"Conv2D", "Conv3D", "DepthwiseConv2dNative"})

#: Transposed convolutions (TensorFlow spells them as the gradient of a convolution).
TRANSPOSED_CONV_OPS = frozenset({"Conv2DBackpropInput", "Conv3DBackpropInputV2"})

#: Ops whose arithmetic outweighs a subgraph call even when alone: a subgraph holding one is never dropped
#: for being small (the seed's single Dense layer compiles).
COMPUTE_HEAVY_OPS = MATMUL_OPS | EINSUM_OPS | CONV_OPS | TRANSPOSED_CONV_OPS

#: TensorFlow's lowered control flow: a Switch sends a "dead" tensor down the branch not taken and a Merge
#: forwards whichever input is alive. Only TF's executor knows dead tensors; a compiled subgraph would run
#: every branch (and OpenVINO's conversion of a ``_SwitchN`` answers an empty tensor for a branch not taken).
DATAFLOW_CONTROL_OPS = frozenset(
    {
        "Switch",
        "_SwitchN",
        "RefSwitch",
        "Merge",
        "RefMerge",
        "Enter",
        "RefEnter",
        "Exit",
        "RefExit",
        "NextIteration",
        "RefNextIteration",
        "LoopCond",
        "ControlTrigger",
    }
)
#: where a lowered branch's tensors end: everything between a switch and these runs only when alive
DATAFLOW_MERGE_OPS = frozenset({"Merge", "RefMerge", "Exit", "RefExit"})

#: Tensors of these dtypes cannot live inside a compiled subgraph (the design's rule for every backend;
#: a backend may hold some of them inside, never at a subgraph's boundary: ``SupportQuery.internal_dtypes``).
UNPLACEABLE_DTYPES = frozenset({"string", "resource", "variant"})
