"""Paired bootstrap of the difference between two systems scored on the same examples, for the experiment tables:
per-task lists of per-example scores {task: [s_0, s_1, ...]} (same order in both); the statistic is the mean over
tasks of each task's mean difference; examples are resampled within each task, the same draw for both systems."""
import random


def paired(a, b, resamples=2000, seed=0):
    """(point, lo, hi): the difference a − b and its 95% interval."""
    rng = random.Random(seed)
    tasks = sorted(set(a) & set(b))
    assert tasks, "no task in common"
    for t in tasks:
        assert len(a[t]) == len(b[t]), (t, len(a[t]), len(b[t]))
    diff = lambda idx: sum(sum(a[t][i] - b[t][i] for i in idx[t]) / len(idx[t]) for t in tasks) / len(tasks)
    point = diff({t: range(len(a[t])) for t in tasks})
    draws = sorted(diff({t: [rng.randrange(len(a[t])) for _ in a[t]] for t in tasks}) for _ in range(resamples))
    return point, draws[int(0.025 * resamples)], draws[int(0.975 * resamples) - 1]
