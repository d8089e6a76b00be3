"""The L-BFGS direction's cost per iteration: jaxstyle's compact representation against jaxopt's
two-loop recursion, and how closely the two directions agree in float32.

    python benchmarks/lbfgs_direction.py [--sizes 256 384 512] [--iterations 10] [--repeats 4]
        [--real-iterations 2] [--real-repeats 4] [--accuracy-iterations 120] [--no-real]

Timing: the same run (history 100, the default line search) is compiled twice, with jaxstyle's
solver (`jaxstyle.lbfgs.CompactLBFGS`) and with jaxopt's own `LBFGS` (its two-loop direction,
with torch's pair rule around it: `TwoLoopLBFGS`), and
the two then advance chunk by chunk in turn (ABBA order), so that the load of a shared machine
falls on both alike; the figures are medians over the chunks of seconds per iteration.
Objectives: a trivial one (the chained Rosenbrock function: a few elementwise passes, so the
L-BFGS machinery is nearly all of an iteration) at 4:3 sizes, and the real one (VGG16, default
options, chelsea.jpg and marbled.jpg) when its weights are there
(``jaxstyle weights download vgg16-keras``).

Accuracy: on the histories each compact run ended with, on that of a longer real run (a full,
wrapped history) and on random ones, the float32 directions of both methods against a float64
two-loop on the same (float32) history, with the condition number of the compact form's
triangular system.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import shlex
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import jaxopt
import numpy as np
from jaxopt._src.lbfgs import inv_hessian_product  # jaxopt's two-loop, the reference

from jaxstyle import StyleOptions, compiled, lbfgs, load_image, losses, steps
from jaxstyle.resampling import fit_longest_side, resize
from jaxstyle.targets import content_targets, style_targets

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@dataclasses.dataclass(eq=False)
class TwoLoopLBFGS(jaxopt.LBFGS):
    """jaxopt's own L-BFGS (its two-loop direction and its update) with torch's first step and
    pair rule applied around it, as jaxstyle ran before the compact direction."""

    first_step: float = 0.0

    def init_state(self, x, *args):
        state = super().init_state(x, *args)
        gamma = lbfgs.first_gamma(state.grad, self.stepsize, self.first_step)
        return state if gamma is None else state._replace(gamma=gamma)

    def update(self, x, state, *args):
        new_x, new_state = super().update(x, state, *args)
        skip = jnp.vdot(new_x - x, new_state.grad - state.grad) <= lbfgs.CURVATURE_EPS
        slot = state.iter_num % self.history_size
        first = state.gamma if self.first_step else jnp.ones_like(state.gamma)
        return jaxopt.OptStep(new_x, new_state._replace(
            rho_history=jnp.where(skip, new_state.rho_history.at[slot].set(0.0),
                                  new_state.rho_history),
            gamma=jnp.where(skip, jnp.where(state.iter_num == 0, first, state.gamma),
                            new_state.gamma)))


SOLVERS = {"two-loop": TwoLoopLBFGS, "compact": lbfgs.CompactLBFGS}


def trivial(x, target, _static):
    """The chained Rosenbrock function of the image's values (minus `target`): next to nothing
    beside the L-BFGS machinery, yet far from solved in a few hundred iterations."""
    v = (x - target).ravel()
    value = jnp.sum(100.0 * (v[1:] - v[:-1] ** 2) ** 2 + (1.0 - v[:-1]) ** 2)
    return value, {"value": value}


@contextlib.contextmanager
def solver(kind: str):
    """`jaxstyle.steps` building its L-BFGS from `SOLVERS[kind]`."""
    saved = steps.CompactLBFGS
    compiled.COMPILED.clear()  # the compiled functions hold the solver they were built with
    steps.CompactLBFGS = SOLVERS[kind]
    try:
        yield
    finally:
        steps.CompactLBFGS = saved
        compiled.COMPILED.clear()


class Run:
    """One compiled run advanced a chunk at a time (its image and state donated each time)."""

    def __init__(self, kind, loss_fn, loss_static, config, x0, args, chunk):
        with solver(kind):
            init, run_chunk = steps.chunk_functions(loss_fn, loss_static, config, chunk)
            self.state = jax.block_until_ready(init(x0, *args))
            self.x = jnp.array(x0, copy=True)
            self.step = run_chunk.lower(self.x, self.state, jnp.asarray(chunk), *args).compile()
        self.args, self.chunk = args, chunk

    def advance(self) -> tuple[float, float]:
        """Seconds and loss evaluations per iteration over one chunk."""
        before = int(self.state.opt.num_fun_eval)
        start = time.perf_counter()
        result = self.step(self.x, self.state, jnp.asarray(self.chunk), *self.args)
        jax.block_until_ready((result.x, result.state))
        seconds = time.perf_counter() - start
        if bool(result.diverged) or int(result.steps) != self.chunk:
            raise RuntimeError("the benchmark run diverged")
        self.x, self.state = result.x, result.state
        return (seconds / self.chunk,
                (int(self.state.opt.num_fun_eval) - before) / self.chunk)


def compare(name, loss_fn, loss_static, config, x0, args, iterations, repeats):
    """Times both solvers in turn and returns the compact run's final state."""
    runs = {k: Run(k, loss_fn, loss_static, config, x0, args, iterations) for k in SOLVERS}
    for run in runs.values():
        run.advance()  # warm-up chunk
    seconds = {k: [] for k in runs}
    evaluations = {k: [] for k in runs}
    for r in range(repeats):
        for kind in (SOLVERS if r % 2 == 0 else reversed(SOLVERS)):
            s, e = runs[kind].advance()
            seconds[kind].append(s)
            evaluations[kind].append(e)
    old, new = (statistics.median(seconds[k]) for k in ("two-loop", "compact"))
    pairs = [a / b for a, b in zip(seconds["two-loop"], seconds["compact"])]
    print(f"{name:>26} | {1e3 * old:>14.1f} | {1e3 * new:>13.1f} | {old / new:>5.2f}x "
          f"({min(pairs):.2f}-{max(pairs):.2f}) | "
          f"{statistics.mean(evaluations['two-loop']):.2f} / "
          f"{statistics.mean(evaluations['compact']):.2f}", flush=True)
    return runs["compact"].state.opt


def two_loop64(s, y, rho, gamma, grad, iter_num):
    """Nocedal & Wright's Algorithm 7.4 in float64 NumPy, on [m, n] histories."""
    m = len(rho)
    slots = [(iter_num + i) % m for i in range(m)]
    q, alphas = grad.copy(), {}
    for i in reversed(slots):
        alphas[i] = rho[i] * (s[i] @ q)
        q -= alphas[i] * y[i]
    r = gamma * q
    for i in slots:
        r += (alphas[i] - rho[i] * (y[i] @ r)) * s[i]
    return -r


def accuracy(name, state):
    """Relative error of both float32 directions against the float64 two-loop."""
    m = state.rho_history.shape[0]
    flat = lambda a: np.asarray(a, np.float64).reshape(a.shape[0], -1)  # noqa: E731
    want = two_loop64(flat(state.s_history), flat(state.y_history),
                      np.asarray(state.rho_history, np.float64), float(state.gamma),
                      np.asarray(state.grad, np.float64).ravel(), int(state.iter_num))
    old = jax.jit(inv_hessian_product)(-state.grad, state.s_history, state.y_history,
                                       state.rho_history, state.gamma, state.iter_num % m)
    new = jax.jit(lbfgs.compact_direction)(state)[0]
    error = lambda d: (np.linalg.norm(np.asarray(d, np.float64).ravel() - want)  # noqa: E731
                       / np.linalg.norm(want))
    rho = np.asarray(state.rho_history, np.float64)
    order = (int(state.iter_num) + np.arange(m)) % m
    kept = rho[order] != 0
    s, y = flat(state.s_history)[order][kept], flat(state.y_history)[order][kept]
    # The first of the compact form's unit triangular systems (the second is its transpose
    # scaled by rho on the other side), in float64.
    system = np.eye(len(s)) + rho[order][kept][:, None] * np.triu(s @ y.T, 1)
    print(f"{name:>26} | {len(s):>4} | {np.linalg.cond(system):>9.1e} | {error(old):.1e} | "
          f"{error(new):.1e}", flush=True)


def random_state(rng, m, n, pairs, skipped):
    """A float32 `LBFGSState` of `pairs` pairs from a random SPD curvature whose
    eigenvalues span 1e-3..1e3, the pairs numbered in `skipped` with rho 0."""
    scales = np.exp(rng.uniform(np.log(1e-3), np.log(1e3), n))
    s = np.zeros((m, n), np.float32)
    y = np.zeros((m, n), np.float32)
    rho = np.zeros(m, np.float32)
    for k in range(pairs):
        s[k % m] = rng.normal(size=n)
        y[k % m] = scales * s[k % m] * (1 + 0.1 * rng.normal(size=n))
        rho[k % m] = 0.0 if k in skipped else 1.0 / np.dot(s[k % m], y[k % m])
    s64, y64 = s.astype(np.float64), y.astype(np.float64)
    zero = jnp.float32(0)
    return lbfgs.LBFGSState(
        jnp.asarray(pairs), zero, jnp.asarray(rng.normal(size=n), jnp.float32), zero, zero,
        jnp.asarray(s), jnp.asarray(y), jnp.asarray(rho), jnp.float32(0.5), {},
        jnp.asarray(False), 0, 0, 0, jnp.asarray(s64 @ y64.T, jnp.float32),
        jnp.asarray(y64 @ y64.T, jnp.float32))


def real_problem(size):
    """The default objective on the bundled chelsea.jpg / marbled.jpg with the real VGG16."""
    from jaxstyle import load_weights
    from jaxstyle.weights import find_weights

    weights = load_weights(find_weights())
    pre = weights.preprocessing
    options = StyleOptions(size=size)
    config = options.loss_config(model_range=pre.model_range())
    model = lambda img: pre.to_model(resize(jnp.asarray(img), *fit_longest_side(  # noqa: E731
        img.shape, size)))
    content = model(load_image(EXAMPLES / "chelsea.jpg"))
    style = model(load_image(EXAMPLES / "marbled.jpg"))
    targets = losses.Targets(content_targets(weights.params, content, config),
                             (style_targets(weights.params, [style], config),),
                             weights=options.loss_weights())
    return (losses.objective, config, options.optimizer_config(pre.model_range()), content,
            (weights.params, targets))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 384, 512])
    parser.add_argument("--iterations", type=int, default=10, help="per timed chunk (trivial)")
    parser.add_argument("--repeats", type=int, default=4, help="timed chunks per solver")
    parser.add_argument("--real-iterations", type=int, default=2)
    parser.add_argument("--real-repeats", type=int, default=4)
    parser.add_argument("--no-real", action="store_true", help="skip the real objective")
    parser.add_argument("--accuracy-iterations", type=int, default=120,
                        help="a real run this long for the accuracy table (0: none)")
    parser.add_argument("--accuracy-size", type=int, default=128)
    args = parser.parse_args()
    print("$ python " + " ".join(shlex.quote(a) for a in sys.argv))
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, history 100, default line "
          "search; two-loop and compact alternate chunk by chunk\n")
    print(f"{'objective':>26} | two-loop ms/it | compact ms/it | speed-up (min-max) | "
          "evaluations/it two-loop / compact")
    finals = {}
    rng = np.random.default_rng(0)
    for size in args.sizes:
        h, w = size * 3 // 4, size
        target = jnp.asarray(rng.random((h, w, 3)), jnp.float32)
        config = StyleOptions().optimizer_config(1.0)
        finals[f"trivial {w}x{h}"] = compare(
            f"trivial {w}x{h}", trivial, None, config, jnp.zeros((h, w, 3)), (target,),
            args.iterations, args.repeats)
    real = not args.no_real
    if real:
        try:
            from jaxstyle.weights import find_weights
            find_weights()
        except Exception as exc:  # noqa: BLE001 - any reason the weights are not there
            print(f"(real objective skipped: {exc})")
            real = False
    if real:
        for size in args.sizes:
            loss_fn, static, config, x0, problem_args = real_problem(size)
            name = f"VGG16 {x0.shape[1]}x{x0.shape[0]}"
            finals[name] = compare(name, loss_fn, static, config, x0, problem_args,
                                   args.real_iterations, args.real_repeats)
    if real and args.accuracy_iterations:
        loss_fn, static, config, x0, problem_args = real_problem(args.accuracy_size)
        run = Run("compact", loss_fn, static, config, x0, problem_args, args.accuracy_iterations)
        run.advance()
        finals[f"VGG16 {x0.shape[1]}x{x0.shape[0]}, {args.accuracy_iterations} it"] = run.state.opt
    print(f"\n{'history':>26} | kept | cond(I+rho U) | two-loop f32 | compact f32   (relative "
          "error against a float64 two-loop on the same history)")
    for name, state in finals.items():
        accuracy(name, state)
    for n, pairs, skipped in [(10_000, 100, {3, 50}), (10_000, 257, {200, 230, 256}),
                              (100_000, 140, set())]:
        accuracy(f"random n={n} pairs={pairs}", random_state(rng, 100, n, pairs, skipped))


if __name__ == "__main__":
    main()
