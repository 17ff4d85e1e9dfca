"""Routing problems as data: instance sets (generated, `.npz`, TSPLIB in its own metric), tours
and their lengths, reference files. Imports point down: `files` (reading and writing) and
`references` over `tsplib` (TSPLIB's format) over `instances` (the record, its checks, the
generators), `tours` under all. Both the learned policies (`ho_co.routing`) and the reference
solvers (`ho_co.solvers`) read instances here; importing it loads no torch (`generate_atsp`
imports it when called).
"""

from ho_co.problems.files import instance_files, load_instances, save_instances
from ho_co.problems.instances import PROBLEMS, Instances, distance_matrix, generate_atsp, generate_tsp
from ho_co.problems.references import References, load_references
from ho_co.problems.tours import check_tours, gaps, mean_gap, tour_lengths

__all__ = [
    "PROBLEMS", "Instances", "References", "check_tours", "distance_matrix", "gaps", "generate_atsp",
    "generate_tsp", "instance_files", "load_instances", "load_references", "mean_gap",
    "save_instances", "tour_lengths",
]
