"""L-BFGS probes vs scikit-learn: time to reach the optimum's loss within 1%.

Measures, side by side in one process, the wall time that
`kp.solvers.LBFGSProbe` (default float32) and scikit-learn's
`LogisticRegression(solver="lbfgs")` take on the same float32 features, for
the widths of ResNet-50's pooled block outputs (64, 256, 512, 1024, 2048)
and 10 and 1000 classes. Both minimise the same objective,

    mean cross-entropy + l2 / 2 * ||kernel||^2   (bias not penalised),

scikit-learn's with `C = 1 / (l2 * n)`; l2 = 1e-4.

Data (seeded, float32, non-negative like post-ReLU pooled features): class
means `m_c ~ N(0, separation**2 / d * I)` (separation 4), balanced labels,
`x = relu(m_y + N(0, I))`: the same expected distance between class means at
every width; then the labels of a random 20% of examples are shuffled among
them (`--label-noise`), so that classes overlap. n = 10000 examples for 10
classes: not separable at the small widths, separable by sheer capacity at
the large ones (the reference probe's accuracy on the training set and on
fresh examples is printed). n = 10000 for 1000 classes too (10 per class),
not 20000: at d = 2048 one scikit-learn evaluation takes about 1 s, and its
fits (the reference, the recording, the timed ones) would take the default
run well past 10 minutes. With 10 per class the training set is separable
at every width; the penalty keeps the optimum finite.

Protocol, for every (classes, width):

* Recording fits, untimed: each solver once with `tol=--ref-tol` (1e-7),
  a callback added to `scipy.optimize.minimize` (which both call) logging
  the objective after every iteration. scikit-learn's is the reference; f*
  is the lower of the two final objectives, evaluated in float64 NumPy. They
  also warm TensorFlow up; but each `LBFGSProbe.fit` builds and traces a
  tf.function of its own (~15 ms), so every timed fit includes a trace.
* Time to 1%: k = the first iteration whose logged objective is <= 1.01 f*;
  a fit with `max_iter=k` (and the tight tol, so that it runs all k) is
  timed, all of it (data checks, transfers, the final evaluation). Its
  float64 gap is checked first (k + 1 until within 1%).
* Own convergence: each solver as shipped, `tol=1e-4` and `max_iter=10000`;
  its time, iterations and float64 gap to f*. The tolerances differ in
  meaning: scikit-learn's bounds the gradient entries, `LBFGSProbe`'s those
  with respect to its rescaled weights (see below).
* Every timed fit runs `--repeats` (3) times, the two solvers alternating
  which goes first; times are medians. A fit longer than `--long` (10 s) is
  timed once. ms/eval: a recording fit's `minimize` time over its objective
  evaluations (L-BFGS-B's own work included).

Computation: scikit-learn keeps float32 features float32, but L-BFGS-B hands
it float64 parameters, so `X @ coef` and `residual.T @ X` run in float64
NumPy BLAS (X upcast on every evaluation), its Cython loss too.
`LBFGSProbe` computes logits, softmax and gradients in float32 TensorFlow,
sums the chunks in float64, and runs L-BFGS on centred, rescaled features
(an exact change of variables). Both run SciPy's L-BFGS-B in float64, with
10 (scikit-learn) and 20 (`LBFGSProbe`) correction pairs.

Threads: SciPy bundles its own OpenBLAS, which L-BFGS-B's linear algebra
uses; with 2 threads it contends with NumPy's OpenBLAS on 2 cores and slows
scikit-learn up to ~10x on small problems (`LBFGSProbe` is unaffected). By
default it is set to 1 thread (`--scipy-blas-threads 0` leaves it as is).

Target: `LBFGSProbe` reaches 1.01 f* faster than scikit-learn at every width.

    python bench/solvers.py            # ~10 minutes on 2 cores
    python bench/solvers.py --quick    # smoke run: n = 2000, d = 64, 256

`--path`: the regularisation path instead. `kp.solvers.LBFGSProbeCV` (its
default grid, `np.logspace(-6, 0, 13)`, strongest penalty first, each fit
warm-started from the previous ones, scored on a held-out split of
`--n-val` fresh examples), as shipped (the path stops once 2 penalties in
a row score no better than the best) and over the whole grid
(`patience=None`), beside scikit-learn's `LogisticRegressionCV` on the
same grid (`Cs = 1 / (l2 n)`, ascending: it warm-starts along them too)
and the same split (`PredefinedSplit`, scored by `neg_log_loss`,
`refit=False`: the kept fit is the path's, as ours), `lbfgs`, `tol=1e-4`.
For each, the path's wall time over one cold fit at the penalty it chose
(`LBFGSProbe(l2=l2_)`, `LogisticRegression(C=C_)`), medians of
`--repeats` (a run over `--long` timed once); the chosen penalties and the
iterations (the path's in all, the single fit's) beside them.

Target: our path costs at most 3x one fit at the penalty it chose.

    python bench/solvers.py --path            # d = 64 ... 2048, 10 classes
    python bench/solvers.py --path --quick    # n = 2000, d = 64, 256
"""

import argparse
import contextlib
import os
import statistics
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import scipy.optimize  # noqa: E402
import scipy.special  # noqa: E402
import tensorflow as tf  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV  # noqa: E402
from sklearn.model_selection import PredefinedSplit  # noqa: E402
from threadpoolctl import ThreadpoolController  # noqa: E402

from keras_probes.solvers import L2S, LBFGSProbe, LBFGSProbeCV  # noqa: E402

tf.get_logger().setLevel("ERROR")
# A `max_iter=k` fit stops before its tolerance by design.
warnings.filterwarnings("ignore", category=ConvergenceWarning)

WITHIN = 0.01  # "reached the optimum": objective <= (1 + WITHIN) * f*
MAX_ITER = 10000


def make_data(n, d, num_classes, separation, label_noise, seed, split=0):
    """Features `relu(m_y + N(0, I))`, float32, noisy labels; `split` draws fresh examples."""
    means = np.random.default_rng([seed, d, num_classes]).standard_normal(
        (num_classes, d), dtype=np.float32
    )
    means *= separation / np.sqrt(d)
    rng = np.random.default_rng([seed, d, num_classes, 1 + split])
    labels = rng.permutation(np.arange(n) % num_classes)
    features = means[labels] + rng.standard_normal((n, d), dtype=np.float32)
    noisy = rng.random(n) < label_noise
    labels[noisy] = rng.permutation(labels[noisy])  # still balanced
    return np.maximum(features, 0, out=features), labels


def objective(features, labels, coef, intercept, l2, rows=4096):
    """The probe objective in float64 NumPy; `coef` is `(d, classes)`."""
    coef, intercept = np.asarray(coef, np.float64), np.asarray(intercept, np.float64)
    total = 0.0
    for i in range(0, len(labels), rows):
        logits = features[i : i + rows].astype(np.float64) @ coef + intercept
        y = labels[i : i + rows]
        total += np.sum(scipy.special.logsumexp(logits, axis=1) - logits[np.arange(len(y)), y])
    return total / len(labels) + l2 / 2 * np.sum(coef**2)


class Sklearn:
    name = "sklearn"

    def __init__(self, l2, n):
        self.c = 1 / (l2 * n)

    def fit(self, features, labels, num_classes, max_iter=MAX_ITER, tol=1e-4):
        model = LogisticRegression(C=self.c, solver="lbfgs", tol=tol, max_iter=max_iter)
        model.fit(features, labels)
        return model.coef_.T, model.intercept_, int(model.n_iter_[0])


class Ours:
    name = "ours"

    def __init__(self, l2, n):
        self.l2 = l2

    def fit(self, features, labels, num_classes, max_iter=MAX_ITER, tol=1e-4):
        probe = LBFGSProbe(l2=self.l2, max_iter=max_iter, tol=tol)
        probe.fit(features, labels, num_classes)
        return probe.coef_, probe.intercept_, probe.n_iter_


@contextlib.contextmanager
def recording():
    """Logs a `scipy.optimize.minimize` call: objective per iteration, evaluations, time."""
    log = {"values": []}
    original = scipy.optimize.minimize

    def minimize(fun, x0, *args, **kwargs):
        if kwargs.pop("callback", None) is not None:
            raise RuntimeError("the solver already passes a callback: cannot record")

        def callback(intermediate_result):
            log["values"].append(float(intermediate_result.fun))

        start = time.perf_counter()
        result = original(fun, x0, *args, callback=callback, **kwargs)
        log["seconds"] = time.perf_counter() - start
        log["nfev"], log["nit"] = int(result.nfev), int(result.nit)
        return result

    scipy.optimize.minimize = minimize
    try:
        yield log
    finally:
        scipy.optimize.minimize = original


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def limit_scipy_blas(threads):
    """Sets the threads of SciPy's bundled OpenBLAS; returns how many libraries it set."""
    libs = [
        lib
        for lib in ThreadpoolController().lib_controllers
        if lib.internal_api == "openblas" and f"{os.sep}scipy.libs{os.sep}" in lib.filepath
    ]
    for lib in libs:
        lib.set_num_threads(threads)
    return len(libs)


def run_case(num_classes, d, n, args):
    x, y = make_data(n, d, num_classes, args.separation, args.label_noise, args.seed)
    solvers = [Sklearn(args.l2, n), Ours(args.l2, n)]

    def f(fitted):
        return objective(x, y, fitted[0], fitted[1], args.l2)

    # Recording fits (untimed) to a tight tol: the reference (scikit-learn's),
    # each solver's trajectory and evaluations; TensorFlow's warm-up.
    logs, finals = {}, {}
    for s in solvers:
        max_iter = MAX_ITER if s.name == "sklearn" else 2 * logs["sklearn"]["nit"] + 50
        with recording() as log:
            fitted = s.fit(x, y, num_classes, max_iter=max_iter, tol=args.ref_tol)
        logs[s.name], finals[s.name] = log, f(fitted)
        if s.name == "sklearn":
            ref = fitted
    f_star = min(finals.values())
    train_acc = np.mean(np.argmax(x @ ref[0] + ref[1], axis=1) == y)
    x_test, y_test = make_data(
        min(n, 5000), d, num_classes, args.separation, args.label_noise, args.seed, split=1
    )
    test_acc = np.mean(np.argmax(x_test @ ref[0] + ref[1], axis=1) == y_test)

    # Time to 1%: the first iteration within 1% on the trajectory (the tight
    # tol lets a `max_iter=k` fit run all k), checked in float64.
    first = {}
    for s in solvers:
        values = logs[s.name]["values"]
        k = next((k + 1 for k, v in enumerate(values) if v <= (1 + WITHIN) * f_star), None)
        while k is not None:
            gap = f(s.fit(x, y, num_classes, max_iter=k, tol=args.ref_tol)) / f_star - 1
            if gap <= WITHIN:
                break
            k = k + 1 if k < len(values) else None
        first[s.name] = k

    settings = {"1%": (first, args.ref_tol), "own": ({s.name: MAX_ITER for s in solvers}, 1e-4)}
    times = {(s.name, kind): [] for kind in settings for s in solvers}
    gaps, nit = {}, {}
    for rep in range(args.repeats):
        order = solvers if rep % 2 == 0 else solvers[::-1]
        for kind, (max_iters, tol) in settings.items():
            for s in order:
                key, max_iter = (s.name, kind), max_iters[s.name]
                if max_iter is None or (times[key] and times[key][0] > args.long):
                    continue  # never within 1%; or a long fit, timed once
                seconds, fitted = timed(s.fit, x, y, num_classes, max_iter, tol)
                times[key].append(seconds)
                gaps[key], nit[key] = f(fitted) / f_star - 1, fitted[2]
    return {
        "C": num_classes,
        "d": d,
        "n": n,
        "acc": (train_acc, test_acc),
        "f*": f_star,
        "ref": (logs["sklearn"]["seconds"], logs["sklearn"]["nit"], finals["sklearn"] / f_star - 1),
        "nit": nit,
        "ms/eval": {name: 1000 * log["seconds"] / log["nfev"] for name, log in logs.items()},
        "time": {key: statistics.median(t) if t else float("nan") for key, t in times.items()},
        "gap": gaps,
    }


def ratio(r, kind):
    """sklearn's time over ours: inf where only ours got within 1%, nan where ours did not."""
    sk, ours = r["time"][("sklearn", kind)], r["time"][("ours", kind)]
    return float("inf") if np.isnan(sk) and not np.isnan(ours) else sk / ours


def cell(r, name, kind, width):
    seconds = r["time"][(name, kind)]
    if np.isnan(seconds):
        return f"{'never':>{width}}"
    return f"{seconds:>{width - 7}.3f} ({r['nit'][(name, kind)]:>4})"


def print_table(rows):
    print(f"\n{'':>25}{'time to 1.01 f*, s (iterations)':^40}", end="")
    print(f"{'own convergence (tol 1e-4), s (iterations) gap':^64}{'ms/eval':^14}")
    head = f"{'C':>5}{'d':>6}{'n':>7}{'f*':>7}{'sklearn':>16}{'ours':>15}{'sk/ours':>9}"
    head += f"{'sklearn':>16}{'gap':>9}{'ours':>15}{'gap':>9}{'sk/ours':>9}{'sk':>7}{'ours':>7}"
    print(head)
    for r in rows:
        line = f"{r['C']:>5}{r['d']:>6}{r['n']:>7}{r['f*']:>7.3f} "
        line += cell(r, "sklearn", "1%", 15) + cell(r, "ours", "1%", 15)
        line += f"{ratio(r, '1%'):>9.2f} "
        for name in ("sklearn", "ours"):
            gap = r["gap"].get((name, "own"), float("nan"))
            line += cell(r, name, "own", 15) + f"{gap:>9.1e}"
        line += f"{ratio(r, 'own'):>9.2f}"
        line += f"{r['ms/eval']['sklearn']:>7.1f}{r['ms/eval']['ours']:>7.1f}"
        print(line)


def run_path_case(num_classes, d, n, args):
    """The path and one fit at its penalty, ours and scikit-learn's, on the same split."""
    x, y = make_data(n, d, num_classes, args.separation, args.label_noise, args.seed)
    xv, yv = make_data(
        args.n_val, d, num_classes, args.separation, args.label_noise, args.seed, split=1
    )
    l2s = sorted(L2S, reverse=True)  # strongest first; C ascending
    factor = 1 if num_classes > 2 else 2  # scikit-learn's binary C (kp.solvers' docstring)
    cs = [factor / (l2 * n) for l2 in l2s]
    both_x, both_y = np.concatenate([x, xv]), np.concatenate([y, yv])
    split = PredefinedSplit(np.r_[np.full(n, -1), np.zeros(args.n_val, int)])

    def ours_path(patience=LBFGSProbeCV.settings["patience"].default):
        probe = LBFGSProbeCV(l2s=l2s, cv="val", patience=patience)
        return probe.fit(x, y, num_classes, X_val=xv, y_val=yv)

    def ours_grid():  # every penalty, as scikit-learn's
        return ours_path(patience=None)

    def sklearn_path():
        model = LogisticRegressionCV(
            Cs=cs, cv=split, scoring="neg_log_loss", l1_ratios=(0.0,), solver="lbfgs",
            tol=1e-4, max_iter=MAX_ITER, refit=False, use_legacy_attributes=False,
        )  # fmt: skip
        return model.fit(both_x, both_y)

    LBFGSProbe(max_iter=2).fit(x[:100], y[:100], num_classes)  # TensorFlow's warm-up
    # The first repeat also gives the choices; a run longer than --long is timed once.
    times, fitted = {}, {}
    paths = {"ours path": ours_path, "ours grid": ours_grid, "sklearn path": sklearn_path}
    for name, run in paths.items():
        seconds, fitted[name] = timed(run)
        times[name] = [seconds]
    ours, grid, theirs = fitted["ours path"], fitted["ours grid"], fitted["sklearn path"]
    ours_l2, their_l2 = ours.l2_, l2s[cs.index(float(theirs.C_))]

    def ours_one():
        return LBFGSProbe(l2=ours_l2).fit(x, y, num_classes)

    def sklearn_one():
        return LogisticRegression(C=float(theirs.C_), tol=1e-4, max_iter=MAX_ITER).fit(x, y)

    runs = {**paths, "ours one": ours_one, "sklearn one": sklearn_one}
    for name in ("ours one", "sklearn one"):
        seconds, fitted[name] = timed(runs[name])
        times[name] = [seconds]
    one_ours, one_theirs = fitted["ours one"], fitted["sklearn one"]
    for rep in range(1, args.repeats):
        for name in list(runs)[:: 1 if rep % 2 == 0 else -1]:
            if times[name][0] <= args.long:
                times[name].append(timed(runs[name])[0])
    their_losses = -theirs.scores_[0, 0]  # (folds, l1_ratios, Cs): the one fold, ascending C
    return {
        "C": num_classes,
        "d": d,
        "n": n,
        "l2": (ours_l2, their_l2),
        # The held-out loss at our choice: ours, and scikit-learn's at the same penalty.
        "loss": (ours.path_[ours_l2], their_losses[l2s.index(ours_l2)]),
        "best": min(their_losses),
        "nit": (ours.n_iter_, one_ours.n_iter_, int(theirs.n_iter_.sum()), one_theirs.n_iter_[0]),
        "grid": (grid.l2_, grid.n_iter_, len(ours.path_)),
        "time": {name: statistics.median(t) for name, t in times.items()},
    }


def print_path_table(rows):
    print("\nseconds (iterations in all); path: LBFGSProbeCV as shipped (stops 2 penalties past")
    print("the best), grid: every penalty (patience=None), as LogisticRegressionCV; one: a cold")
    print("fit at the penalty chosen")
    head = f"{'C':>4}{'d':>6}{'n':>7}{'l2 ours':>9}{'sklearn':>9}"
    head += f"{'path':>14}{'grid':>14}{'one':>13}{'path/one':>9}{'grid/one':>9}"
    head += f"{'sk path':>14}{'sk one':>13}{'path/one':>9}{'sk/grid':>8}"
    print(head)
    for r in rows:
        t, nit, grid = r["time"], r["nit"], r["grid"]

        def cell(seconds, iterations, width):
            return f"{f'{seconds:.2f} ({iterations})':>{width}}"

        line = f"{r['C']:>4}{r['d']:>6}{r['n']:>7}{r['l2'][0]:>9.1e}{r['l2'][1]:>9.1e}"
        line += cell(t["ours path"], nit[0], 14) + cell(t["ours grid"], grid[1], 14)
        line += cell(t["ours one"], nit[1], 13)
        line += f"{t['ours path'] / t['ours one']:>9.2f}{t['ours grid'] / t['ours one']:>9.2f}"
        line += cell(t["sklearn path"], nit[2], 14) + cell(t["sklearn one"], nit[3], 13)
        line += f"{t['sklearn path'] / t['sklearn one']:>9.2f}"
        line += f"{t['sklearn path'] / t['ours grid']:>8.2f}"
        print(line)


def main_path(args):
    start = time.perf_counter()
    print(f"regularisation path: {len(L2S)} penalties, {min(L2S):g} to {max(L2S):g}; held out "
          f"{args.n_val} fresh examples; {args.repeats} timed repeats (medians)")  # fmt: skip
    rows = []
    for num_classes, n in zip(args.classes, args.n, strict=True):
        for d in args.widths:
            r = run_path_case(num_classes, d, n, args)
            rows.append(r)
            print(
                f"  C = {num_classes}, d = {d:>4}: l2 ours {r['l2'][0]:.1e} ({r['grid'][2]} "
                f"penalties fitted; the whole grid's choice {r['grid'][0]:.1e}), sklearn "
                f"{r['l2'][1]:.1e}; held-out loss at ours: ours {r['loss'][0]:.5f}, sklearn "
                f"{r['loss'][1]:.5f} (its least {r['best']:.5f})",
                flush=True,
            )
    print_path_table(rows)
    for name in ("path", "grid"):
        ratios = [r["time"][f"ours {name}"] / r["time"]["ours one"] for r in rows]
        print(f"\nours, {name} / one fit: min {min(ratios):.2f}, median "
              f"{statistics.median(ratios):.2f}, max {max(ratios):.2f}", end="")  # fmt: skip
        if name == "path":
            print(f"; target (<= 3 at every width): {'met' if max(ratios) <= 3 else 'NOT met'}")
    ratios = [r["time"]["sklearn path"] / r["time"]["sklearn one"] for r in rows]
    print(f"\nsklearn, path / one fit: min {min(ratios):.2f}, median "
          f"{statistics.median(ratios):.2f}, max {max(ratios):.2f}")  # fmt: skip
    same = sum(r["l2"][0] == r["l2"][1] for r in rows)
    print(f"the same penalty chosen as scikit-learn at {same} of {len(rows)} widths")
    print(f"total {time.perf_counter() - start:.0f} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 256, 512, 1024, 2048])
    parser.add_argument("--classes", type=int, nargs="+", help="default: 10 and 1000 (--path: 10)")
    parser.add_argument(
        "--n", type=int, nargs="+", help="examples, one per --classes (default: 10000 each)"
    )
    parser.add_argument("--l2", type=float, default=1e-4)
    parser.add_argument("--separation", type=float, default=4.0, help="class-mean scale")
    parser.add_argument(
        "--label-noise", type=float, default=0.2, help="fraction of labels shuffled"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed fits per solver (median)")
    parser.add_argument("--long", type=float, default=10.0, help="fits over this many s: once")
    parser.add_argument("--ref-tol", type=float, default=1e-7, help="tol of the reference fit")
    parser.add_argument(
        "--scipy-blas-threads", type=int, default=1, help="SciPy's OpenBLAS; 0: leave as is"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument(
        "--path", action="store_true", help="the regularisation path (LBFGSProbeCV) instead"
    )
    parser.add_argument("--n-val", type=int, default=5000, help="held-out examples (--path)")
    args = parser.parse_args()
    args.classes = args.classes or ([10] if args.path else [10, 1000])
    args.n = args.n or [10000] * len(args.classes)
    if args.quick:
        args.widths, args.n, args.repeats = [64, 256], [2000] * len(args.classes), 1
        args.n_val = min(args.n_val, 1000)
    if len(args.n) != len(args.classes):
        parser.error("--n needs one value per --classes")

    start = time.perf_counter()
    blas = "left as is"
    if args.scipy_blas_threads and limit_scipy_blas(args.scipy_blas_threads):
        blas = f"{args.scipy_blas_threads} thread(s)"
    print(f"separation {args.separation:g}, label noise {args.label_noise:g}; SciPy's OpenBLAS: "
          f"{blas}")  # fmt: skip
    if args.path:
        return main_path(args)
    print(f"l2 = {args.l2:g}; {args.repeats} timed repeats (one above {args.long:g} s)")
    rows = []
    for num_classes, n in zip(args.classes, args.n, strict=True):
        print(f"{num_classes} classes, n = {n}: sklearn C = 1/(l2 n) = {1 / (args.l2 * n):g}")
        for d in args.widths:
            r = run_case(num_classes, d, n, args)
            rows.append(r)
            ref_seconds, ref_nit, ref_gap = r["ref"]
            at_1 = ", ".join(
                f"{name} {r['gap'].get((name, '1%'), np.nan):.4f}" for name in ("sklearn", "ours")
            )
            print(
                f"  d = {d:>4}: f* = {r['f*']:.5f}; reference {ref_seconds:.1f} s, "
                f"{ref_nit} iterations, gap {ref_gap:.1e}; accuracy train "
                f"{r['acc'][0]:.3f}, fresh {r['acc'][1]:.3f}; gaps at 1%: {at_1}",
                flush=True,
            )
    print_table(rows)
    ratios = {(r["C"], r["d"]): ratio(r, "1%") for r in rows}
    slower = [f"C={c} d={d} ({q:.2f}x)" for (c, d), q in ratios.items() if not q >= 1]
    verdict = "met" if not slower else "NOT met; sklearn/ours < 1 at " + ", ".join(slower)
    finite = [q for q in ratios.values() if np.isfinite(q)]
    if finite:
        print(f"\ntime to 1.01 f*, sklearn/ours: min {min(finite):.2f}, ", end="")
        print(f"median {statistics.median(finite):.2f}, max {max(finite):.2f}")
    print(f"target (ours faster than sklearn to 1.01 f* at every width): {verdict}")
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
