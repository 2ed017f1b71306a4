"""The real solar system from the JPL DE421 ephemeris (PyPI ``de421`` read with ``jplephem``), offline.

Source: Folkner, Williams, Boggs, "The Planetary and Lunar Ephemeris DE 421", JPL IOM 343R-08-003
(2008). Positions are barycentric (ICRF axes), converted here to astronomical units (AU) and AU/day;
masses are the ephemeris' own ``GM`` constants (AU^3/day^2), reported relative to the Sun.

The learning task mirrors the charged N-body one: from positions, velocities and masses of the Sun
and the inner planets plus Jupiter at a date ``t``, predict positions at ``t + horizon_days``. To keep
the test honest, train and test dates come from different periods (before/after ``split_jd``).

    >>> st = solar_states([2451545.0])                      # J2000.0
    >>> st.positions.shape, BODIES[3]
    ((1, 6, 3), 'earthmoon')
    >>> bool(0.98 < float(((st.positions[0, 3] - st.positions[0, 0]) ** 2).sum() ** 0.5) < 1.02)   # Earth ~1 AU from the Sun
    True
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

__all__ = ["BODIES", "ALL_BODIES", "SolarStates", "solar_states", "relative_masses", "solar_dataset", "J2000"]

ALL_BODIES = ("sun", "mercury", "venus", "earthmoon", "mars", "jupiter", "saturn", "uranus", "neptune", "pluto")
BODIES = ALL_BODIES[:6]
"""Default bodies: the Sun, Mercury, Venus, the Earth-Moon barycentre, Mars and Jupiter (within 5.5 AU)."""
J2000 = 2451545.0
_GM_NAME = {"sun": "GMS", "mercury": "GM1", "venus": "GM2", "earthmoon": "GMB", "mars": "GM4",
            "jupiter": "GM5", "saturn": "GM6", "uranus": "GM7", "neptune": "GM8", "pluto": "GM9"}


@lru_cache(maxsize=1)
def _ephemeris():
    import de421
    from jplephem import Ephemeris
    return Ephemeris(de421)


@dataclass
class SolarStates:
    """Barycentric states: ``positions``/``velocities`` ``(T, n_bodies, 3)`` in AU and AU/day,
    ``jd`` ``(T,)`` Julian dates (TDB), ``bodies`` their names."""

    positions: np.ndarray
    velocities: np.ndarray
    jd: np.ndarray
    bodies: tuple


def _check_bodies(bodies) -> tuple:
    bodies = tuple(bodies)
    bad = [b for b in bodies if b not in ALL_BODIES]
    if bad or len(bodies) < 2:
        raise ValueError(f"bodies must be at least two of {ALL_BODIES}, got {bodies!r}")
    return bodies


def date_range() -> tuple[float, float]:
    """First and last Julian date covered by DE421."""
    e = _ephemeris()
    return float(e.jalpha), float(e.jomega)


def solar_states(jd, bodies=BODIES) -> SolarStates:
    """Positions (AU) and velocities (AU/day) of ``bodies`` at Julian dates ``jd`` (scalar or ``(T,)``)."""
    bodies = _check_bodies(bodies)
    jd = np.atleast_1d(np.asarray(jd, dtype=np.float64))
    lo, hi = date_range()
    if jd.ndim != 1 or jd.size == 0 or jd.min() < lo or jd.max() > hi:
        raise ValueError(f"jd must be Julian dates within DE421's range [{lo}, {hi}], got {jd.min() if jd.size else jd}..")
    e = _ephemeris()
    pos = np.empty((jd.size, len(bodies), 3))
    vel = np.empty_like(pos)
    for k, b in enumerate(bodies):
        p, v = e.position_and_velocity(b, jd)                        # km, km/day; shape (3, T)
        pos[:, k], vel[:, k] = np.asarray(p).T / e.AU, np.asarray(v).T / e.AU
    return SolarStates(pos, vel, jd, bodies)


def relative_masses(bodies=BODIES) -> np.ndarray:
    """Masses relative to the Sun, ``(n_bodies,)``, from DE421's GM constants."""
    bodies = _check_bodies(bodies)
    e = _ephemeris()
    return np.array([getattr(e, _GM_NAME[b]) for b in bodies]) / e.GMS


def solar_dataset(n_samples: int, horizon_days: float = 30.0, period: str = "train", seed: int = 0,
                  bodies=BODIES, split_jd: float = J2000, dtype: torch.dtype = torch.float32) -> dict:
    """Random dates -> (state, positions ``horizon_days`` later), as tensors.

    Dates are uniform in DE421's range before ``split_jd`` (``period="train"``) or after it
    (``period="test"``). Velocities are given in AU per horizon (``v * horizon_days``) so that both
    inputs are of order one.

    Returns ``loc (S,n,3)`` AU, ``vel (S,n,3)`` AU/horizon, ``mass (S,n,1)`` (log10 of the mass relative
    to the Sun, divided by 10), ``target (S,n,3)`` AU, ``jd (S,)``.
    """
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
    if not (isinstance(horizon_days, (int, float)) and horizon_days > 0):
        raise ValueError(f"horizon_days must be a positive number of days, got {horizon_days!r}")
    if period not in ("train", "test"):
        raise ValueError(f"period must be 'train' or 'test', got {period!r}")
    lo, hi = date_range()
    a, b = (lo + 1, split_jd - horizon_days) if period == "train" else (split_jd, hi - horizon_days - 1)
    if b <= a:
        raise ValueError(f"no dates left in period {period!r} for horizon_days={horizon_days}")
    rng = np.random.default_rng(seed)
    jd = np.sort(rng.uniform(a, b, size=int(n_samples)))
    now, later = solar_states(jd, bodies), solar_states(jd + horizon_days, bodies)
    logm = np.log10(relative_masses(bodies)) / 10.0
    t = lambda arr: torch.as_tensor(np.ascontiguousarray(arr), dtype=dtype)
    return {"loc": t(now.positions), "vel": t(now.velocities * horizon_days),
            "mass": t(np.broadcast_to(logm[None, :, None], (len(jd), len(logm), 1))),
            "target": t(later.positions), "jd": torch.as_tensor(jd)}
