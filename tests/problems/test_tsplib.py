"""TSPLIB files in their own metric: every edge-weight type and format, the published optima
reproduced by Concorde, `.opt.tour` and optima lists, and malformed files named with their fault."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from ho_co.cli import main
from ho_co.problems import instance_files, load_instances, load_references, tour_lengths
from ho_co.problems.tsplib import read_optima
from ho_co.solvers import concorde

DATA = Path(__file__).resolve().parents[2] / "data" / "tsplib"
OPTIMA = read_optima(DATA / "optima.txt")
POINTS = [(0, 0), (30, 40), (1, 1), (7, 2), (3, 9)]


def _coords_file(tmp_path, wtype, points=POINTS, kind="TSP", extra=""):
    lines = "\n".join(f"{i + 1} {x} {y}" for i, (x, y) in enumerate(points))
    path = tmp_path / f"{wtype.lower()}.tsp"
    path.write_text(f"NAME: x\nTYPE: {kind}\nDIMENSION: {len(POINTS)}\nEDGE_WEIGHT_TYPE: {wtype}\n{extra}"
                    f"NODE_COORD_SECTION\n{lines}\nEOF\n")
    return path


def _att(a, b):  # TSPLIB's pseudo-Euclidean distance, as its documentation writes it
    r = math.sqrt(((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2) / 10.0)
    t = int(r + 0.5)
    return t + 1 if t < r else t


EXPECTED = {  # TSPLIB's definitions, written out independently of tsplib95
    "EUC_2D": lambda a, b: int(math.hypot(a[0] - b[0], a[1] - b[1]) + 0.5),
    "CEIL_2D": lambda a, b: math.ceil(math.hypot(a[0] - b[0], a[1] - b[1])),
    "ATT": _att,
    "MAN_2D": lambda a, b: int(abs(a[0] - b[0]) + abs(a[1] - b[1]) + 0.5),
    "MAX_2D": lambda a, b: max(int(abs(a[0] - b[0]) + 0.5), int(abs(a[1] - b[1]) + 0.5)),
}


@pytest.mark.parametrize("wtype", EXPECTED)
def test_coordinate_types_give_the_tsplib_metric(tmp_path, wtype):
    inst = load_instances(_coords_file(tmp_path, wtype))
    assert inst.problem == "tsp" and inst.edge_weight_type == wtype and inst.cost_matrix.dtype == np.int64
    expected = [[EXPECTED[wtype](a, b) for b in POINTS] for a in POINTS]
    np.testing.assert_array_equal(inst.cost_matrix[0], expected)
    np.testing.assert_array_equal(inst.locs[0], POINTS)  # kept for drawing


def test_known_values_of_rounded_metrics(tmp_path):
    # (0, 0) -> (1, 1): sqrt(2) rounds to 1 in EUC_2D and up to 2 in CEIL_2D; (0, 0) -> (30, 40):
    # 50 in EUC_2D, ATT 16 (sqrt(250) = 15.8 rounded up), GEO between two points one degree apart
    euc, ceil, att = (load_instances(_coords_file(tmp_path, t)).cost_matrix[0] for t in ("EUC_2D", "CEIL_2D", "ATT"))
    assert (euc[0, 2], ceil[0, 2], euc[0, 1], att[0, 1]) == (1, 2, 50, 16)
    geo = load_instances(_coords_file(tmp_path, "GEO", [(0, 0), (1, 0), (0, 1), (2, 0), (0, 2)])).cost_matrix[0]
    assert geo[0, 1] == 112  # one degree on TSPLIB's sphere, 111.3 km, is int(111.3 + 1) in GEO


def test_geo_and_3d_types_follow_tsplib95(tmp_path):
    import tsplib95

    for wtype in ("GEO", "EUC_3D", "MAN_3D", "MAX_3D"):
        three = " 5" if wtype.endswith("3D") else ""
        body = "\n".join(f"{i + 1} {x} {y}{three}" for i, (x, y) in enumerate(POINTS))
        path = tmp_path / f"{wtype}.tsp"
        path.write_text(f"NAME: x\nTYPE: TSP\nDIMENSION: 5\nEDGE_WEIGHT_TYPE: {wtype}\nNODE_COORD_SECTION\n{body}\nEOF\n")
        inst, prob = load_instances(path), tsplib95.load(path)
        expected = [[0 if i == j else prob.get_weight(i, j) for j in range(1, 6)] for i in range(1, 6)]
        np.testing.assert_array_equal(inst.cost_matrix[0], expected)
        assert (inst.locs is None) == wtype.endswith("3D")


MATRIX = np.array([[0, 3, 5, 9, 4], [3, 0, 6, 2, 7], [5, 6, 0, 8, 1], [9, 2, 8, 0, 6], [4, 7, 1, 6, 0]])


def _explicit_numbers(fmt: str, m: np.ndarray) -> list[int]:
    n = len(m)
    rows = {"UPPER_ROW": lambda i, j: j > i, "LOWER_ROW": lambda i, j: j < i,
            "UPPER_DIAG_ROW": lambda i, j: j >= i, "LOWER_DIAG_ROW": lambda i, j: j <= i,
            "FULL_MATRIX": lambda i, j: True}
    if fmt.endswith("_COL"):  # the upper triangle column by column is the transpose's lower one row by row
        flipped = fmt.replace("UPPER", "lower").replace("LOWER", "UPPER").replace("lower", "LOWER")
        return _explicit_numbers(flipped.replace("_COL", "_ROW"), m.T)
    return [int(m[i, j]) for i in range(n) for j in range(n) if rows[fmt](i, j)]


@pytest.mark.parametrize("fmt", ["FULL_MATRIX", "UPPER_ROW", "LOWER_ROW", "UPPER_DIAG_ROW", "LOWER_DIAG_ROW",
                                 "UPPER_COL", "LOWER_COL", "UPPER_DIAG_COL", "LOWER_DIAG_COL"])
def test_every_explicit_format_gives_the_same_matrix(tmp_path, fmt):
    numbers = " ".join(map(str, _explicit_numbers(fmt, MATRIX)))
    path = tmp_path / "m.tsp"
    path.write_text(f"NAME: m\nTYPE: TSP\nDIMENSION: 5\nEDGE_WEIGHT_TYPE: EXPLICIT\nEDGE_WEIGHT_FORMAT: {fmt}\n"
                    f"EDGE_WEIGHT_SECTION\n{numbers}\nEOF\n")
    inst = load_instances(path)
    np.testing.assert_array_equal(inst.cost_matrix[0], MATRIX)
    assert inst.locs is None and inst.name == "m"


def test_atsp_file_keeps_direction_and_zeroes_the_diagonal(tmp_path):
    path = tmp_path / "a.atsp"
    path.write_text("NAME: a\nTYPE: ATSP\nDIMENSION: 3\nEDGE_WEIGHT_TYPE: EXPLICIT\n"
                    "EDGE_WEIGHT_FORMAT: FULL_MATRIX\nEDGE_WEIGHT_SECTION\n9999 1 2\n3 9999 4\n5 6 9999\nEOF\n")
    inst = load_instances(path, problem="atsp", num_loc=3)
    np.testing.assert_array_equal(inst.cost_matrix[0], [[0, 1, 2], [3, 0, 4], [5, 6, 0]])
    assert tour_lengths(inst.cost_matrix, [[0, 1, 2]])[0] == 1 + 4 + 5


SMALL = (sorted(p.name for p in DATA.glob("*.tsp") if load_instances(p).num_loc <= 76)
         + sorted(f"atsp/{p.name}" for p in DATA.glob("atsp/*.atsp")))


@pytest.mark.parametrize("name", SMALL)
def test_concorde_reproduces_the_published_optimum(name):
    inst = load_instances(DATA / name)
    sol = concorde.solve(inst.cost_matrix[0])
    assert sol.method == "concorde" and sol.optimal
    assert tour_lengths(inst.cost_matrix, sol.tour[None])[0] == OPTIMA[inst.name]


def test_shipped_files_cover_the_types_and_formats():
    import tsplib95

    seen = {(p.type, p.edge_weight_type, p.edge_weight_format)
            for p in (tsplib95.load(f) for f in [*DATA.glob("*.tsp"), *DATA.glob("atsp/*.atsp")])}
    assert {("TSP", "GEO", None), ("TSP", "EUC_2D", None), ("TSP", "EXPLICIT", "FULL_MATRIX"),
            ("TSP", "EXPLICIT", "UPPER_ROW"), ("TSP", "EXPLICIT", "LOWER_DIAG_ROW"),
            ("ATSP", "EXPLICIT", "FULL_MATRIX")} <= seen
    assert {p.stem for p in instance_files(DATA)} <= set(OPTIMA)  # every shipped file has its optimum


def test_cli_solve_a_directory_one_result_per_file(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("ulysses16.tsp", "gr17.tsp", "bays29.tsp"):
        (src / name).write_text((DATA / name).read_text())
    # an optimal tour file beside one problem is read and reported (TSPLIB's NAME.opt.tour)
    gr17 = load_instances(src / "gr17.tsp")
    tour = concorde.solve(gr17.cost_matrix[0]).tour
    (src / "gr17.opt.tour").write_text("NAME: gr17.opt.tour\nTYPE: TOUR\nDIMENSION: 17\nTOUR_SECTION\n"
                                        + "\n".join(str(t + 1) for t in tour) + "\n-1\nEOF\n")
    out = tmp_path / "refs"
    assert main(["solve", "--solver", "concorde", "--instances", str(src), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "gr17 (EXPLICIT, N=17)" in printed and "(gr17.opt.tour: 2085)" in printed
    for name in ("ulysses16", "gr17", "bays29"):
        refs = load_references(out / f"{name}.npz", load_instances(src / f"{name}.tsp"))
        assert refs.lengths[0] == OPTIMA[name] and refs.optimal[0] and refs.solver == "concorde"
    assert load_references(src / "gr17.opt.tour", gr17).lengths[0] == OPTIMA["gr17"]


MALFORMED = {
    "dimension": ("NAME: d\nTYPE: TSP\nDIMENSION: 5\nEDGE_WEIGHT_TYPE: EUC_2D\nNODE_COORD_SECTION\n"
                  "1 0 0\n2 3 0\n3 3 4\n4 0 4\nEOF\n", "DIMENSION is 5, but the coordinate section lists 4"),
    "no section": ("NAME: d\nTYPE: TSP\nDIMENSION: 4\nEDGE_WEIGHT_TYPE: ATT\nEOF\n",
                   "EDGE_WEIGHT_TYPE ATT needs a NODE_COORD_SECTION"),
    "unknown type": ("NAME: d\nTYPE: TSP\nDIMENSION: 3\nEDGE_WEIGHT_TYPE: FOO\nNODE_COORD_SECTION\n"
                     "1 0 0\n2 1 0\n3 1 1\nEOF\n", "'FOO' is not one TSPLIB defines"),
    "weights count": ("NAME: d\nTYPE: TSP\nDIMENSION: 4\nEDGE_WEIGHT_TYPE: EXPLICIT\nEDGE_WEIGHT_FORMAT: "
                      "UPPER_ROW\nEDGE_WEIGHT_SECTION\n1 2 3 4 5\nEOF\n",
                      "EDGE_WEIGHT_SECTION holds 5 numbers, but UPPER_ROW for DIMENSION 4 needs 6"),
    "no weights": ("NAME: d\nTYPE: TSP\nDIMENSION: 4\nEDGE_WEIGHT_TYPE: EXPLICIT\nEDGE_WEIGHT_FORMAT: "
                   "UPPER_ROW\nEOF\n", "needs an EDGE_WEIGHT_SECTION"),
    "asymmetric": ("NAME: d\nTYPE: TSP\nDIMENSION: 3\nEDGE_WEIGHT_TYPE: EXPLICIT\nEDGE_WEIGHT_FORMAT: "
                   "FULL_MATRIX\nEDGE_WEIGHT_SECTION\n0 1 2\n3 0 4\n5 6 0\nEOF\n", "not symmetric"),
    "special": ("NAME: d\nTYPE: TSP\nDIMENSION: 3\nEDGE_WEIGHT_TYPE: SPECIAL\nNODE_COORD_SECTION\n"
                "1 0 0\n2 1 0\n3 1 1\nEOF\n", "missing needed special weight function"),
    "no type": ("NAME: d\nTYPE: TSP\nDIMENSION: 3\nNODE_COORD_SECTION\n1 0 0\n2 1 0\n3 1 1\nEOF\n",
                "EDGE_WEIGHT_TYPE missing"),
    "cvrp": ("NAME: c\nTYPE: CVRP\nDIMENSION: 3\nEOF\n", "TSPLIB TYPE CVRP is not TSP or ATSP"),
    "duplicate id": ("NAME: d\nTYPE: TSP\nDIMENSION: 4\nEDGE_WEIGHT_TYPE: EUC_2D\nNODE_COORD_SECTION\n"
                     "1 0 0\n2 3 0\n3 3 4\n4 0 4\n3 9 9\nEOF\n", r":10: node 3 is listed twice in NODE_COORD"),
    "duplicate id, one missing": ("NAME: d\nTYPE: TSP\nDIMENSION: 4\nEDGE_WEIGHT_TYPE: EUC_2D\n"
                                  "NODE_COORD_SECTION\n1 0 0\n2 3 0\n2 3 4\n4 0 4\nEOF\n",
                                  r":8: node 2 is listed twice"),
    "duplicate display id": ("NAME: d\nTYPE: TSP\nDIMENSION: 3\nEDGE_WEIGHT_TYPE: EXPLICIT\n"
                             "EDGE_WEIGHT_FORMAT: UPPER_ROW\nDISPLAY_DATA_TYPE: TWOD_DISPLAY\n"
                             "EDGE_WEIGHT_SECTION\n1 2\n3\nDISPLAY_DATA_SECTION\n1 0 0\n1 1 1\n3 2 2\nEOF\n",
                             r"node 1 is listed twice in DISPLAY_DATA_SECTION"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_files_name_the_file_and_the_fault(tmp_path, case):
    text, message = MALFORMED[case]
    path = tmp_path / f"{case.replace(' ', '_')}.tsp"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as err:
        load_instances(path)
    assert str(err.value).startswith(str(path))


def test_optima_lists_and_bad_lines(tmp_path):
    assert OPTIMA["eil76"] == 538 and OPTIMA["ulysses16"] == 6859
    bad = tmp_path / "optima.txt"
    bad.write_text("# comment\na: 10\nb 12\n")
    with pytest.raises(ValueError, match=r"optima.txt:3: expected 'name: length'"):
        read_optima(bad)


def test_bad_opt_tour_is_refused(tmp_path):
    inst = load_instances(DATA / "gr17.tsp")
    path = tmp_path / "gr17.opt.tour"
    path.write_text("NAME: t\nTYPE: TOUR\nDIMENSION: 17\nTOUR_SECTION\n" + "1\n" * 17 + "-1\nEOF\n")
    with pytest.raises(ValueError, match="gr17.opt.tour: tour of instance 0 is not a permutation"):
        load_references(path, inst)
