"""A seeded synthetic street world with exact per-pixel semantics and metric depth.

A numpy ray caster renders a driving-like scene seen from a forward-moving camera: a ground
plane (road with lane markings, cross streets, tiled sidewalks, grass verges), building boxes
with windowed facades, trees, poles, parked and moving cars and pedestrians, Lambertian sun
shading, contact shadows, a sky gradient, distance fog and mild sensor noise.

World frame: x right, y up, z forward along the street. The camera looks along +z (with mild
yaw), so a ray's parameter t with an un-normalised direction whose camera-z component is 1 is
exactly the z-depth along the optical axis.

Futures branch: every moving car and pedestrian picks one of several discrete manoeuvres at a
random moment inside the clip (cars: straight / turn left / turn right / brake; people: keep
walking / cross the road / stop). ``render(..., choices=...)`` forces a choice so the same past
can be rendered with different futures (see :func:`branch_variants`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

CLASS_NAMES = ["sky", "road", "sidewalk", "building", "vegetation", "terrain", "car", "person",
               "pole"]
SKY, ROAD, SIDEWALK, BUILDING, VEGETATION, TERRAIN, CAR, PERSON, POLE = range(len(CLASS_NAMES))

CAR_MANOEUVRES = ("straight", "turn_left", "turn_right", "brake")
PERSON_MANOEUVRES = ("walk", "cross", "stop")

ROAD_HALF = 5.0          # road spans |x| < 5: two 3.1 m lanes plus parking strips
LANE_EDGE = 3.1          # solid edge line between driving lane and parking strip
WALK_OUT = 8.0           # sidewalk spans 5 < |x| < 8
BUILD_X = 9.5            # building fronts start at |x| = 9.5
LANE_X = 1.6             # lane centres at +-1.6 (right-hand traffic, ego lane +x)
PARK_X = 4.0             # parked cars' centre line
_SIM_DT = 0.01           # trajectory integration step (s)


# ----------------------------------------------------------------------------- procedural noise
def _hash(ix: np.ndarray, iy: np.ndarray, salt: int) -> np.ndarray:
    """Integer lattice hash -> float32 in [0, 1); uint32 arithmetic wraps on purpose."""
    h = (ix.astype(np.int64).astype(np.uint32) * np.uint32(374761393)
         + iy.astype(np.int64).astype(np.uint32) * np.uint32(668265263)
         + np.uint32(salt * 2654435761 % 2**32))
    h = (h ^ (h >> np.uint32(13))) * np.uint32(1274126177)
    h = h ^ (h >> np.uint32(16))
    return (h & np.uint32(0xFFFF)).astype(np.float32) / np.float32(65536.0)


def _value_noise(x: np.ndarray, y: np.ndarray, salt: int) -> np.ndarray:
    """Smooth 2-D value noise in [0, 1) (bilinear over hashed lattice, smoothstep weights)."""
    fx, fy = np.floor(x), np.floor(y)
    ix, iy = fx.astype(np.int64), fy.astype(np.int64)
    u, v = x - fx, y - fy
    u, v = u * u * (3 - 2 * u), v * v * (3 - 2 * v)
    a, b = _hash(ix, iy, salt), _hash(ix + 1, iy, salt)
    c, d = _hash(ix, iy + 1, salt), _hash(ix + 1, iy + 1, salt)
    return (a + (b - a) * u) * (1 - v) + (c + (d - c) * u) * v


# ----------------------------------------------------------------------------- scene description
@dataclass
class _Box:
    """Yaw-oriented box: centre (x, y, z), half extents (ex, ey, ez) in its local frame."""
    cls: int
    centre: np.ndarray
    half: np.ndarray
    yaw: float = 0.0
    colour: np.ndarray = field(default_factory=lambda: np.ones(3, np.float32))
    kind: str = "plain"      # texture: building | body | cabin | chassis | plain
    salt: int = 0


@dataclass
class _Mover:
    """A car or pedestrian whose trajectory branches at ``branch_frac`` of the clip."""
    is_car: bool
    x0: float
    z0: float
    heading: float           # yaw (rad): 0 = +z, positive turns towards +x
    speed: float
    branch_frac: float
    choice: int
    colour: np.ndarray
    colour2: np.ndarray
    salt: int
    height: float = 1.75


def _rot_y(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    # Maps local (x, y, z) to world; yaw>0 turns +z towards +x.
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], np.float32)


class SyntheticWorld:
    """One seeded street scene.

    Args:
        seed: everything (layout, textures, motions, branch moments/choices, noise) derives
            from it, so the same seed renders bit-identical clips.
        image_size: (h, w) in pixels.
        num_cars: moving cars (parked cars are added on top).
        num_people: walking pedestrians.
        hfov_deg: horizontal field of view.
        max_depth: sky / far-clip depth in metres.
        noise_std: sensor noise std in 8-bit units (0 disables).
    """

    def __init__(self, seed: int, image_size: tuple[int, int] = (224, 224), num_cars: int = 4,
                 num_people: int = 4, num_parked: int = 4, hfov_deg: float = 75.0,
                 max_depth: float = 80.0, noise_std: float = 2.0):
        self.seed = int(seed)
        self.h, self.w = image_size
        self.max_depth = float(max_depth)
        self.noise_std = float(noise_std)
        rng = np.random.default_rng([self.seed, 0x5EED])
        self.f = (self.w / 2) / np.tan(np.radians(hfov_deg) / 2)
        # Camera motion: forward speed, gentle sinusoidal yaw and lateral sway within the lane.
        self.cam_speed = rng.uniform(5.0, 10.0)
        self.cam_pitch = np.radians(rng.uniform(2.0, 6.0))    # dashcams look slightly down
        self.cam_height = rng.uniform(1.35, 1.65)
        self.yaw_amp, self.yaw_freq, self.yaw_phase = (np.radians(rng.uniform(1, 4)),
                                                       rng.uniform(0.1, 0.4), rng.uniform(0, 6.3))
        self.sun = np.array([rng.uniform(-0.6, 0.6), rng.uniform(0.45, 0.9),
                             rng.uniform(-0.6, 0.3)], np.float32)
        self.sun /= np.linalg.norm(self.sun)
        self.sky_top = np.array([0.30, 0.50, 0.85], np.float32) * rng.uniform(0.85, 1.1)
        self.sky_horizon = np.array([0.82, 0.86, 0.92], np.float32) * rng.uniform(0.9, 1.05)
        self.fog_dist = rng.uniform(55.0, 110.0)
        self.road_tone = rng.uniform(0.26, 0.38)
        self.cross_z = sorted(rng.uniform(25, 120, size=rng.integers(1, 3)).tolist())
        self.static: list[_Box] = []
        self.cylinders: list[tuple] = []     # (cls, cx, cz, r, y0, y1, colour, kind)
        self.spheres: list[tuple] = []       # (cls, cx, cy, cz, r, colour)
        self._build_static(rng, num_parked)
        self.movers = self._build_movers(rng, num_cars, num_people)
        aabbs = ([_box_aabb(b) for b in self.static] + [_cyl_aabb(c) for c in self.cylinders]
                 + [_sph_aabb(s) for s in self.spheres])
        self._static_lo = np.array([a[0] for a in aabbs], np.float32).reshape(-1, 3)
        self._static_hi = np.array([a[1] for a in aabbs], np.float32).reshape(-1, 3)
        # Un-normalised camera rays with z = 1, so a hit's ray parameter is its z-depth.
        u = (np.arange(self.w, dtype=np.float32) + 0.5 - self.w / 2) / self.f
        v = (np.arange(self.h, dtype=np.float32) + 0.5 - self.h / 2) / self.f
        self._dcam = np.stack(np.broadcast_arrays(u[None, :], -v[:, None], np.float32(1)), -1)

    # ------------------------------------------------------------------ layout
    def _build_static(self, rng: np.random.Generator, num_parked: int) -> None:
        facade = np.array([[0.72, 0.66, 0.58], [0.62, 0.42, 0.36], [0.80, 0.78, 0.72],
                           [0.55, 0.55, 0.58], [0.75, 0.60, 0.45], [0.45, 0.40, 0.38]],
                          np.float32)
        for side in (-1, 1):
            z = -30.0
            while z < 150:
                length = rng.uniform(8, 24)
                if any(z - 5 < cz < z + length + 5 for cz in self.cross_z):
                    z = max(cz for cz in self.cross_z if z - 5 < cz < z + length + 5) + 6
                    continue                               # leave a gap for the cross street
                if rng.random() < 0.12:                    # occasional empty lot -> hedge
                    self.static.append(_Box(VEGETATION, np.array(
                        [side * (BUILD_X + 0.6), 0.6, z + length / 2], np.float32),
                        np.array([0.6, 0.6, length / 2], np.float32),
                        colour=np.array([0.25, 0.45, 0.15], np.float32), kind="foliage",
                        salt=int(rng.integers(1 << 30))))
                else:
                    depth, height = rng.uniform(8, 15), rng.uniform(6, 24)
                    setback = rng.uniform(0, 1.5)
                    col = facade[rng.integers(len(facade))] * rng.uniform(0.85, 1.1)
                    self.static.append(_Box(BUILDING, np.array(
                        [side * (BUILD_X + setback + depth / 2), height / 2, z + length / 2],
                        np.float32), np.array([depth / 2, height / 2, length / 2 - 0.05],
                                              np.float32),
                        colour=col.astype(np.float32), kind="building",
                        salt=int(rng.integers(1 << 30))))
                z += length
            # Street furniture on the sidewalk: poles near the curb, trees on the verge.
            z = rng.uniform(-10, 4)
            while z < 140:
                self.cylinders.append((POLE, side * (ROAD_HALF + 0.4), z, 0.08, 0.0,
                                       rng.uniform(5, 7), np.array([0.45, 0.46, 0.48],
                                                                   np.float32), "metal"))
                z += rng.uniform(14, 30)
            z = rng.uniform(-10, 8)
            while z < 140:
                if not any(abs(z - cz) < 6 for cz in self.cross_z):
                    tx = side * rng.uniform(WALK_OUT - 0.8, WALK_OUT + 0.6)
                    trunk = rng.uniform(2.0, 3.0)
                    r = rng.uniform(1.3, 2.2)
                    self.cylinders.append((VEGETATION, tx, z, 0.15, 0.0, trunk + 0.5,
                                           np.array([0.35, 0.25, 0.16], np.float32), "bark"))
                    self.spheres.append((VEGETATION, tx, trunk + r * 0.8, z, r,
                                         np.array([0.22, 0.42, 0.14], np.float32)
                                         * rng.uniform(0.8, 1.2)))
                z += rng.uniform(9, 22)
        taken: list[tuple[int, float]] = []
        for _ in range(num_parked * 4):                    # parked cars along the curbs
            side, z = int(rng.choice([-1, 1])), rng.uniform(6, 110)
            if len(taken) == num_parked or any(
                    s == side and abs(z - z2) < 5.5 for s, z2 in taken) or any(
                    abs(z - cz) < 8 for cz in self.cross_z):
                continue                                   # no overlaps, none in junctions
            taken.append((side, z))
            self._car_boxes_static(side * PARK_X, z, float(np.pi * (side < 0)), rng)
        # One pole close ahead so every clip shows a pole.
        self.cylinders.append((POLE, rng.choice([-1, 1]) * (ROAD_HALF + 0.4),
                               rng.uniform(8, 16), 0.09, 0.0, 6.0,
                               np.array([0.42, 0.43, 0.45], np.float32), "metal"))

    def _car_boxes_static(self, x, z, yaw, rng):
        col = rng.uniform(0.1, 0.9, 3).astype(np.float32)
        for box in _car_parts(col, int(rng.integers(1 << 30))):
            r = _rot_y(yaw)
            box.centre = (r @ box.centre + np.array([x, 0, z], np.float32)).astype(np.float32)
            box.yaw = yaw
            self.static.append(box)

    def _build_movers(self, rng: np.random.Generator, num_cars: int, num_people: int):
        movers = []
        for i in range(num_cars):
            ego_lane = i == 0 or rng.random() < 0.4          # car 0: always ahead of us
            if ego_lane:
                x, heading = LANE_X, 0.0
                z = rng.uniform(10, 22) if i == 0 else rng.uniform(25, 70)
                speed = self.cam_speed * rng.uniform(0.9, 1.2)
            else:                                            # oncoming traffic
                x, heading = -LANE_X, np.pi
                z = rng.uniform(15, 45) if i == 1 else rng.uniform(20, 110)
                speed = rng.uniform(6, 12)
            movers.append(_Mover(True, x, z, heading, speed, rng.uniform(0.15, 0.75),
                                 int(rng.integers(len(CAR_MANOEUVRES))),
                                 rng.uniform(0.1, 0.9, 3).astype(np.float32),
                                 np.zeros(3, np.float32), int(rng.integers(1 << 30))))
        for i in range(num_people):
            side = rng.choice([-1, 1])
            x = side * rng.uniform(ROAD_HALF + 1.0, WALK_OUT - 0.5)
            z = rng.uniform(8, 22) if i == 0 else rng.uniform(6, 60)
            heading = 0.0 if rng.random() < 0.5 else np.pi
            movers.append(_Mover(False, x, z, heading, rng.uniform(1.0, 1.7),
                                 rng.uniform(0.15, 0.75),
                                 int(rng.integers(len(PERSON_MANOEUVRES))),
                                 rng.uniform(0.1, 0.9, 3).astype(np.float32),
                                 rng.uniform(0.05, 0.5, 3).astype(np.float32),
                                 int(rng.integers(1 << 30)), rng.uniform(1.55, 1.9)))
        return movers

    # ------------------------------------------------------------------ motion
    def camera_pose(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Camera centre (3,) and camera-to-world rotation (3, 3) at time t (s)."""
        yaw = self.yaw_amp * np.sin(2 * np.pi * self.yaw_freq * t + self.yaw_phase)
        x = LANE_X + 0.25 * np.sin(2 * np.pi * self.yaw_freq * 0.5 * t + self.yaw_phase)
        pos = np.array([x, self.cam_height, self.cam_speed * t], np.float32)
        cp, sp = np.cos(self.cam_pitch), np.sin(self.cam_pitch)
        pitch = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]], np.float32)  # look down
        return pos, (_rot_y(yaw) @ pitch).astype(np.float32)

    def _trajectory(self, m: _Mover, choice: int, t0: float, t1: float, tb: float):
        """Integrate (x, z, heading) on a fine grid from t0 to t1; branch at time tb."""
        n = int(np.ceil((t1 - t0) / _SIM_DT)) + 2
        ts = t0 + _SIM_DT * np.arange(n)
        after = ts >= tb
        dt_b = np.clip(ts - tb, 0, None)
        heading = np.full(n, m.heading)
        speed = np.full(n, m.speed)
        if m.is_car:
            name = CAR_MANOEUVRES[choice]
            if name in ("turn_left", "turn_right"):          # smooth turn, ~0.5 rad/s
                rate = 0.5 * (-1 if name == "turn_left" else 1)
                heading = heading + rate * np.where(after, dt_b, 0) * np.clip(dt_b / 0.4, 0, 1)
                speed = speed * np.where(after, 0.8, 1.0)
            elif name == "brake":
                speed = np.clip(speed - 5.0 * dt_b, 0, None)
        else:
            name = PERSON_MANOEUVRES[choice]
            if name == "cross":                              # turn towards the road centre
                to_road = -np.sign(m.x0) * np.pi / 2
                turn = (to_road - m.heading + np.pi) % (2 * np.pi) - np.pi   # shortest way
                heading = np.where(after, m.heading + turn
                                   * np.clip(dt_b / 0.5, 0, 1), heading)
                speed = speed * np.where(after, 1.2, 1.0)
            elif name == "stop":
                speed = np.clip(speed - 3.0 * dt_b, 0, None)
        x = m.x0 + np.concatenate([[0], np.cumsum(speed[:-1] * np.sin(heading[:-1]))]) * _SIM_DT
        z = m.z0 + np.concatenate([[0], np.cumsum(speed[:-1] * np.cos(heading[:-1]))]) * _SIM_DT
        return ts, x, z, heading

    def _mover_states(self, stamps: np.ndarray, choices: Sequence[int]):
        """Per mover, (x, z, heading, walk phase) at each stamp; trajectories start at t=0."""
        t_lo, t_hi = float(stamps[0]), float(stamps[-1])
        states = []
        for m, c in zip(self.movers, choices):
            tb = t_lo + m.branch_frac * (t_hi - t_lo)
            ts, x, z, hd = self._trajectory(m, c, 0.0, max(t_hi, 0.0), tb)
            xs, zs, hs = (np.interp(stamps, ts, a) for a in (x, z, hd))
            if m.is_car and m.heading == 0.0:
                # A braking car ahead in our lane is never driven through: the camera keeps a
                # 7 m gap (the car is pushed, a deterministic function of time).
                zs = np.maximum(zs, self.cam_speed * stamps + 7.0)
            dist = np.interp(stamps, ts, np.concatenate(
                [[0], np.cumsum(np.hypot(np.diff(x), np.diff(z)))]))
            states.append((xs, zs, hs, dist))
        return states

    def branch_frame(self, stamps: np.ndarray) -> int:
        """Index of the first frame that may depend on a branch choice."""
        t_lo, t_hi = float(stamps[0]), float(stamps[-1])
        tb = min(t_lo + m.branch_frac * (t_hi - t_lo) for m in self.movers)
        return int(np.searchsorted(stamps, tb, side="right"))

    # ------------------------------------------------------------------ rendering
    def render_clip(self, num_frames: int, fps: float, choices=None, t0: float = 0.0) -> dict:
        """Render ``num_frames`` frames at a fixed frame rate (see :meth:`render`)."""
        return self.render(t0 + np.arange(num_frames, dtype=np.float64) / fps, choices)

    def render(self, stamps: Sequence[float], choices=None) -> dict:
        """Render frames at the given times (s, increasing, >= 0).

        Args:
            choices: None (the seed's own manoeuvres), an int (forces that manoeuvre index,
                modulo the number of options, on every mover) or a sequence, one per mover.
        Returns:
            dict with ``frames`` uint8 [T, h, w, 3], ``semantic`` uint8 [T, h, w] (class ids into
            CLASS_NAMES), ``depth`` float32 [T, h, w] (z-depth in metres, sky = max_depth),
            ``stamps`` float64 [T], ``branch_frame`` int (first frame after the earliest branch
            moment; frames before it do not depend on ``choices``), ``intrinsics`` float32 [3, 3].
        """
        stamps = np.asarray(stamps, np.float64)
        if choices is None:
            choices = [m.choice for m in self.movers]
        elif np.isscalar(choices):
            choices = [int(choices) % (len(CAR_MANOEUVRES) if m.is_car else
                                       len(PERSON_MANOEUVRES)) for m in self.movers]
        states = self._mover_states(stamps, choices)
        T = len(stamps)
        out = dict(frames=np.empty((T, self.h, self.w, 3), np.uint8),
                   semantic=np.empty((T, self.h, self.w), np.uint8),
                   depth=np.empty((T, self.h, self.w), np.float32), stamps=stamps)
        for i, t in enumerate(stamps):
            dyn_boxes, dyn_cyl, dyn_sph = [], [], []
            for m, (xs, zs, hs, dist) in zip(self.movers, states):
                self._mover_parts(m, xs[i], zs[i], hs[i], dist[i], dyn_boxes, dyn_cyl, dyn_sph)
            rgb, sem, dep = self._render_frame(float(t), dyn_boxes, dyn_cyl, dyn_sph)
            if self.noise_std > 0:     # noise keyed by (seed, frame index): same past -> same
                nrng = np.random.default_rng([self.seed, 0xD0, i])
                rgb += nrng.standard_normal(rgb.shape, np.float32) * np.float32(self.noise_std / 255)
            out["frames"][i] = np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8)
            out["semantic"][i], out["depth"][i] = sem, dep
        out["branch_frame"] = self.branch_frame(stamps)
        out["intrinsics"] = np.array([[self.f, 0, self.w / 2], [0, self.f, self.h / 2],
                                      [0, 0, 1]], np.float32)
        return out

    def _mover_parts(self, m: _Mover, x, z, heading, dist, boxes, cyls, sphs):
        if m.is_car:
            r = _rot_y(heading)
            for box in _car_parts(m.colour, m.salt):
                box.centre = (r @ box.centre + np.array([x, 0, z], np.float32)).astype(
                    np.float32)
                box.yaw = float(heading)
                boxes.append(box)
            return
        # Pedestrian: two swinging legs, a torso and a head. Swing follows walked distance.
        hgt = m.height
        swing = 0.18 * np.sin(dist * 2 * np.pi / 1.4)
        fwd = np.array([np.sin(heading), np.cos(heading)])
        side = np.array([fwd[1], -fwd[0]])
        leg_top = 0.48 * hgt
        for s, sw in ((1, swing), (-1, -swing)):
            lx, lz = np.array([x, z]) + side * 0.09 * s + fwd * sw
            cyls.append((PERSON, lx, lz, 0.075, 0.0, leg_top + 0.02, m.colour2, "cloth"))
        cyls.append((PERSON, x, z, 0.19, leg_top, 0.82 * hgt, m.colour, "cloth"))
        sphs.append((PERSON, x, 0.9 * hgt, z, 0.11, np.array([0.85, 0.65, 0.5], np.float32)))

    def _render_frame(self, t: float, dyn_boxes, dyn_cyl, dyn_sph):
        h, w = self.h, self.w
        pos, rot = self.camera_pose(t)
        dirs = self._dcam @ rot.T                                  # [h, w, 3] world rays
        zbuf = np.full((h, w), np.inf, np.float32)
        sem = np.zeros((h, w), np.uint8)
        alb = np.zeros((h, w, 3), np.float32)
        nrm = np.zeros((h, w, 3), np.float32)
        ctx = (pos, rot, dirs, zbuf, sem, alb, nrm)

        # Ground plane y = 0.
        dy = dirs[..., 1]
        down = dy < -1e-6
        tg = np.where(down, -pos[1] / np.where(down, dy, -1), np.inf).astype(np.float32)
        hit = tg < self.max_depth
        # Ground hit points; misses get a far-away sentinel so shadow tests stay finite.
        gx = np.where(hit, pos[0] + tg * dirs[..., 0], 1e4).astype(np.float32)
        gz = np.where(hit, pos[2] + tg * dirs[..., 2], 1e4).astype(np.float32)
        self._shade_ground(hit, tg, gx, gz, ctx)

        # One vectorised projection of every primitive's bounding box culls most of the
        # scene and restricts each ray test to the pixels the object can cover.
        boxes = self.static + dyn_boxes
        cyls, sphs = self.cylinders + dyn_cyl, self.spheres + dyn_sph
        lo = np.concatenate([self._static_lo, *[_box_aabb(b)[0][None] for b in dyn_boxes],
                             *[_cyl_aabb(c)[0][None] for c in dyn_cyl],
                             *[_sph_aabb(c)[0][None] for c in dyn_sph]]) \
            if dyn_boxes or dyn_cyl or dyn_sph else self._static_lo
        hi = np.concatenate([self._static_hi, *[_box_aabb(b)[1][None] for b in dyn_boxes],
                             *[_cyl_aabb(c)[1][None] for c in dyn_cyl],
                             *[_sph_aabb(c)[1][None] for c in dyn_sph]]) \
            if dyn_boxes or dyn_cyl or dyn_sph else self._static_hi
        # Static first (boxes, cylinders, spheres), then dynamic in the same order.
        ns = len(self.static), len(self.cylinders), len(self.spheres)
        order = ([("b", x) for x in self.static] + [("c", x) for x in self.cylinders]
                 + [("s", x) for x in self.spheres] + [("b", x) for x in dyn_boxes]
                 + [("c", x) for x in dyn_cyl] + [("s", x) for x in dyn_sph])
        assert len(order) == len(lo) and sum(ns) == len(self._static_lo)
        draw = {"b": self._box, "c": self._cylinder, "s": self._sphere}
        for (kind, prim), rect in zip(order, self._screen_rects(pos, rot, lo, hi)):
            if rect is not None:
                draw[kind](prim, ctx, rect)

        # Soft contact shadows on the ground under cars, people and tree crowns, each only
        # evaluated inside the screen rectangle of its footprint.
        shade = np.ones((h, w), np.float32)
        ground = (sem == ROAD) | (sem == SIDEWALK) | (sem == TERRAIN)
        casters = []
        for b in boxes:
            if b.kind == "chassis":
                ext = np.abs(_rot_y(b.yaw)) @ b.half + 0.6
                casters.append(("box", b, b.centre - ext, b.centre + ext))
        for c in dyn_cyl:
            casters.append(("cyl", c, np.array([c[1] - 0.5, 0, c[2] - 0.5]),
                            np.array([c[1] + 0.5, 0, c[2] + 0.5])))
        off = -self.sun[[0, 2]] / self.sun[1]
        for sp in self.spheres:
            cx, cz = sp[1] + off[0] * sp[2], sp[3] + off[1] * sp[2]
            casters.append(("sph", (cx, cz, sp[4]), np.array([cx - sp[4], 0, cz - sp[4]]),
                            np.array([cx + sp[4], 0, cz + sp[4]])))
        if casters:
            clo = np.array([c[2] for c in casters], np.float32)
            chi = np.array([c[3] for c in casters], np.float32)
            clo[:, 1] = chi[:, 1] = 0
            for (kind, c, _, _), rect in zip(casters, self._screen_rects(pos, rot, clo, chi)):
                if rect is None:
                    continue
                sl = np.s_[rect[0]:rect[1], rect[2]:rect[3]]
                x, z = gx[sl], gz[sl]
                if kind == "box":
                    lx, lz = _to_local(x - c.centre[0], z - c.centre[2], c.yaw)
                    d = np.maximum(np.abs(lx) - c.half[0], np.abs(lz) - c.half[2])
                    shade[sl] *= 1 - 0.55 * np.clip(1 - d / 0.6, 0, 1) * ground[sl]
                elif kind == "cyl":
                    d = np.hypot(x - c[1], z - c[2]) - 0.2
                    shade[sl] *= 1 - 0.4 * np.clip(1 - d / 0.3, 0, 1) * ground[sl]
                else:
                    d = np.hypot(x - c[0], z - c[1]) - c[2]
                    shade[sl] *= 1 - 0.35 * np.clip(-d / 0.8, 0, 1) * ground[sl]

        # Lambertian sun + sky ambient, then fog towards the horizon colour.
        lam = np.clip(nrm @ self.sun, 0, None)
        amb = 0.45 + 0.15 * nrm[..., 1]
        rgb = alb * ((amb + 0.75 * lam * shade) * np.float32(1.05))[..., None]
        is_sky = ~(zbuf < self.max_depth)
        depth = np.where(is_sky, np.float32(self.max_depth), zbuf)
        fog = (1 - np.exp(-depth / self.fog_dist))[..., None]
        rgb = rgb * (1 - fog) + self.sky_horizon * fog
        # Sky only where no hit: gradient by elevation, procedural clouds, sun glow.
        nd = dirs[is_sky]
        nd = nd / np.linalg.norm(nd, axis=-1, keepdims=True)
        elev = np.clip(nd[:, 1], 0, 1)
        sky = self.sky_horizon + (self.sky_top - self.sky_horizon) * np.sqrt(elev)[:, None]
        k = 3 / (nd[:, 1] + 0.15)
        cloud = _value_noise(nd[:, 0] * k, nd[:, 2] * k, self.seed)
        sky += (0.25 * np.clip(cloud - 0.55, 0, None) * (elev > 0))[:, None]
        sky += 0.3 * (np.clip(nd @ self.sun, 0, 1) ** 64)[:, None]
        rgb[is_sky] = sky
        sem[is_sky] = SKY
        return rgb, sem, depth.astype(np.float32)

    # ------------------------------------------------------------------ textures
    def _shade_ground(self, hit, tg, gx_full, gz_full, ctx):
        pos, rot, dirs, zbuf, sem, alb, nrm = ctx
        gx, gz = gx_full[hit], gz_full[hit]          # texture only the visible ground (1-D)
        ax = np.abs(gx)
        near_cross = np.abs(gz[:, None] - np.array(self.cross_z, np.float32))
        cross = (near_cross < 5.0).any(-1)
        road = (ax < ROAD_HALF) | cross
        walk = ~road & ((ax < WALK_OUT) | (near_cross < 7.0).any(-1))
        cls = np.where(road, ROAD, np.where(walk, SIDEWALK, TERRAIN)).astype(np.uint8)
        n1 = _value_noise(gx * 3.0, gz * 3.0, self.seed + 1)
        n2 = _value_noise(gx * 0.35, gz * 0.35, self.seed + 2)
        # Asphalt with patches; white lane markings (dashed centre line, solid edges),
        # zebra crossing before each cross street.
        col_road = self.road_tone * (0.85 + 0.2 * n1 + 0.25 * n2)
        centre = (np.abs(gx) < 0.08) & (np.mod(gz, 9.0) < 3.0)
        edge = np.abs(ax - LANE_EDGE) < 0.07
        zebra = np.zeros_like(road)
        for cz in self.cross_z:
            zebra |= (np.abs(gz - (cz - 7.0)) < 1.5) & (np.mod(gx, 1.0) < 0.5) & (ax < ROAD_HALF)
            edge &= np.abs(gz - cz) > 5.0
        mark = (centre | edge | zebra) & (ax < ROAD_HALF)
        road_rgb = np.where(mark, 0.85, col_road)[..., None] * np.array([1, 1, 1.03],
                                                                         np.float32)
        # Sidewalk: 0.5 m tiles with dark joints, per-tile brightness; darker curb stones.
        tx, tz = gx * 2.0, gz * 2.0
        joint = (np.abs(tx - np.round(tx)) < 0.04) | (np.abs(tz - np.round(tz)) < 0.04)
        tile = 0.62 + 0.1 * _hash(np.floor(tx), np.floor(tz), self.seed + 3) + 0.06 * n1
        curb = np.abs(ax - ROAD_HALF) < 0.2
        walk_rgb = (np.where(joint | curb, 0.45, tile)[..., None]
                    * np.array([1.0, 0.97, 0.93], np.float32))
        grass_rgb = (0.6 + 0.5 * n1 + 0.3 * n2)[..., None] * np.array([0.28, 0.42, 0.16],
                                                                       np.float32)
        rgb = np.where((cls == ROAD)[..., None], road_rgb,
                       np.where((cls == SIDEWALK)[..., None], walk_rgb, grass_rgb))
        zbuf[hit] = tg[hit]
        sem[hit] = cls
        alb[hit] = rgb
        nrm[hit] = (0, 1, 0)

    def _texture_box(self, b: _Box, lp: np.ndarray, axis: np.ndarray) -> np.ndarray:
        """Albedo [n, 3] for hits on box ``b`` at local points lp [n, 3] on face ``axis``."""
        col = np.broadcast_to(b.colour, lp.shape).astype(np.float32)
        if b.kind == "building":
            # Facade coordinates: along-wall coordinate a, height above ground y.
            a = np.where(axis == 0, lp[:, 2], lp[:, 0]) + b.half[[2, 0]].max()
            y = lp[:, 1] + b.half[1]
            fa, fy = np.mod(a, 3.0), np.mod(y, 3.2)
            win = (fa > 0.7) & (fa < 2.3) & (fy > 0.9) & (fy < 2.6) & (y > 3.0) \
                & (y < 2 * b.half[1] - 0.6) & (axis != 1)
            lit = _hash(np.floor(a / 3.0), np.floor(y / 3.2), b.salt)
            glass = np.stack([0.16 + 0.25 * lit, 0.2 + 0.25 * lit, 0.26 + 0.2 * lit], -1)
            brick = 0.9 + 0.15 * _value_noise(a * 2.0, y * 2.0, b.salt)
            shopfront = (y < 2.8) & (fa > 0.3) & (fa < 2.7) & (y > 0.3) & (axis != 1)
            col = np.where(win[:, None] | shopfront[:, None],
                           glass * np.where(shopfront, 0.7, 1.0)[:, None], col * brick[:, None])
            col = np.where((axis == 1)[:, None], col * 0.6, col)          # flat grey roofs
        elif b.kind == "cabin":
            glass = (axis != 1) & (lp[:, 1] < b.half[1] - 0.06)
            col = np.where(glass[:, None], np.array([0.1, 0.12, 0.15], np.float32), col)
        elif b.kind == "body":
            # Head/tail lights on the short faces, a dark grille line.
            ends = axis == 2
            light = ends & (np.abs(np.abs(lp[:, 0]) - 0.65) < 0.18) & (lp[:, 1] > 0.05) \
                & (lp[:, 1] < 0.2)
            lamp = np.where(lp[:, 2:3] > 0, np.array([0.95, 0.95, 0.8], np.float32),
                            np.array([0.8, 0.08, 0.05], np.float32))
            col = np.where(light[:, None], lamp, col)
        elif b.kind == "foliage":
            col = col * (0.7 + 0.6 * _value_noise(lp[:, 0] * 4 + lp[:, 2] * 4,
                                                  lp[:, 1] * 4, b.salt))[:, None]
        return col

    # ------------------------------------------------------------------ primitives
    def _screen_rects(self, pos, rot, lo: np.ndarray, hi: np.ndarray) -> list:
        """Pixel rectangles (r0, r1, c0, c1) covering world AABBs lo/hi [N, 3] (None = unseen)."""
        sel = np.array(_CORNER_SEL)                                 # [8, 3] 0 -> lo, 1 -> hi
        corners = np.where(sel[None].astype(bool), hi[:, None], lo[:, None])   # [N, 8, 3]
        pc = (corners - pos) @ rot                                  # camera coordinates
        pc[..., 1] *= -1                                            # image v grows downwards
        near = 0.05
        front = pc[..., 2] > near
        zc = np.maximum(pc[..., 2], near)
        uu = pc[..., 0] / zc * self.f + self.w / 2
        vv = pc[..., 1] / zc * self.f + self.h / 2
        rects = []
        for i in range(len(lo)):
            if not front[i].any() or pc[i, :, 2].min() > self.max_depth:
                rects.append(None)
                continue
            if front[i].all():
                u, v = uu[i], vv[i]
            else:   # straddles the near plane: clip the 12 box edges against it
                p = pc[i]
                e0, e1 = p[_EDGE_I], p[_EDGE_J]
                cut = (e0[:, 2] > near) != (e1[:, 2] > near)
                s_ = (near - e0[cut, 2]) / (e1[cut, 2] - e0[cut, 2])
                pts = np.concatenate([p[front[i]], e0[cut] + s_[:, None] * (e1[cut] - e0[cut])])
                z = np.maximum(pts[:, 2], near)
                u = pts[:, 0] / z * self.f + self.w / 2
                v = pts[:, 1] / z * self.f + self.h / 2
            c0, c1 = max(int(np.floor(u.min())), 0), min(int(np.ceil(u.max())) + 1, self.w)
            r0, r1 = max(int(np.floor(v.min())), 0), min(int(np.ceil(v.max())) + 1, self.h)
            rects.append((r0, r1, c0, c1) if c0 < c1 and r0 < r1 else None)
        return rects

    def _box(self, b: _Box, ctx, rect):
        pos, rot, dirs, zbuf, sem, alb, nrm = ctx
        r0, r1, c0, c1 = rect
        d = dirs[r0:r1, c0:c1]
        rl = _rot_y(b.yaw).T
        o = rl @ (pos - b.centre)
        dl = d @ rl.T
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / dl
            t1, t2 = (-b.half - o) * inv, (b.half - o) * inv
        tmin3 = np.minimum(t1, t2)
        tnear = tmin3.max(-1)
        tfar = np.maximum(t1, t2).min(-1)
        zb = zbuf[r0:r1, c0:c1]
        m = (tnear <= tfar) & (tnear > 0.05) & (tnear < zb)
        if not m.any():
            return
        tn = tnear[m]
        axis = tmin3[m].argmax(-1)
        lp = o + tn[:, None] * dl[m]
        nl = np.zeros_like(lp)
        nl[np.arange(len(axis)), axis] = -np.sign(dl[m][np.arange(len(axis)), axis])
        zb[m] = tn
        sem[r0:r1, c0:c1][m] = b.cls
        alb[r0:r1, c0:c1][m] = self._texture_box(b, lp, axis)
        nrm[r0:r1, c0:c1][m] = nl @ rl            # local -> world normal

    def _cylinder(self, c, ctx, rect):
        pos, rot, dirs, zbuf, sem, alb, nrm = ctx
        cls, cx, cz, r, y0, y1, col, kind = c
        r0, r1, c0, c1 = rect
        d = dirs[r0:r1, c0:c1]
        ox, oz = pos[0] - cx, pos[2] - cz
        a = d[..., 0] ** 2 + d[..., 2] ** 2
        bb = ox * d[..., 0] + oz * d[..., 2]
        disc = bb * bb - a * (ox * ox + oz * oz - r * r)
        ok = disc > 0
        t = np.where(ok, (-bb - np.sqrt(np.where(ok, disc, 0))) / np.maximum(a, 1e-12), np.inf)
        y = pos[1] + t * d[..., 1]
        zb = zbuf[r0:r1, c0:c1]
        m = ok & (t > 0.05) & (y >= y0) & (y <= y1) & (t < zb)
        if not m.any():
            return
        tm = t[m]
        px, pz = ox + tm * d[..., 0][m], oz + tm * d[..., 2][m]
        n = np.stack([px / r, np.zeros_like(px), pz / r], -1)
        colr = np.broadcast_to(col, n.shape)
        if kind == "bark":
            colr = colr * (0.8 + 0.4 * _value_noise(np.arctan2(px, pz) * 3, y[m] * 6, 7))[:, None]
        zb[m] = tm
        sem[r0:r1, c0:c1][m] = cls
        alb[r0:r1, c0:c1][m] = colr
        nrm[r0:r1, c0:c1][m] = n

    def _sphere(self, s, ctx, rect):
        pos, rot, dirs, zbuf, sem, alb, nrm = ctx
        cls, cx, cy, cz, r, col = s
        cen = np.array([cx, cy, cz], np.float32)
        r0, r1, c0, c1 = rect
        d = dirs[r0:r1, c0:c1]
        o = pos - cen
        a = (d * d).sum(-1)
        bb = d @ o
        disc = bb * bb - a * (o @ o - r * r)
        ok = disc > 0
        t = np.where(ok, (-bb - np.sqrt(np.where(ok, disc, 0))) / a, np.inf)
        zb = zbuf[r0:r1, c0:c1]
        m = ok & (t > 0.05) & (t < zb)
        if not m.any():
            return
        tm = t[m]
        n = (o + tm[:, None] * d[m]) / r
        colr = np.broadcast_to(col, n.shape)
        if cls == VEGETATION:      # leafy clumps: noise over the sphere surface
            colr = colr * (0.55 + 0.8 * _value_noise(n[:, 0] * 5 + n[:, 2] * 3,
                                                     n[:, 1] * 5, int(cx * 100) & 0xFFFF)
                           )[:, None]
        zb[m] = tm
        sem[r0:r1, c0:c1][m] = cls
        alb[r0:r1, c0:c1][m] = colr
        nrm[r0:r1, c0:c1][m] = n


# Box corners as (x, y, z) picks from (lo, hi); edges join corners differing in one bit.
_CORNER_SEL = [(i >> 2 & 1, i >> 1 & 1, i & 1) for i in range(8)]
_EDGE_I, _EDGE_J = map(np.array, zip(*[(i, i | 1 << k) for i in range(8) for k in range(3)
                                      if not i >> k & 1]))


def _box_aabb(b: _Box):
    ext = np.abs(_rot_y(b.yaw)) @ b.half
    return b.centre - ext, b.centre + ext


def _cyl_aabb(c):
    _, cx, cz, r, y0, y1 = c[:6]
    return np.array([cx - r, y0, cz - r], np.float32), np.array([cx + r, y1, cz + r], np.float32)


def _sph_aabb(s):
    _, cx, cy, cz, r = s[:5]
    c = np.array([cx, cy, cz], np.float32)
    return c - r, c + r


def _to_local(dx, dz, yaw):
    c, s = np.cos(yaw), np.sin(yaw)
    return c * dx - s * dz, s * dx + c * dz


def _car_parts(colour: np.ndarray, salt: int) -> list[_Box]:
    """Car-local boxes (origin on the ground under the car centre, +z = forward)."""
    f32 = lambda *a: np.array(a, np.float32)  # noqa: E731
    return [
        _Box(CAR, f32(0, 0.2, 0), f32(0.82, 0.17, 1.75), colour=f32(0.06, 0.06, 0.07),
             kind="chassis", salt=salt),
        _Box(CAR, f32(0, 0.65, 0), f32(0.9, 0.3, 2.15), colour=colour, kind="body",
             salt=salt),
        _Box(CAR, f32(0, 1.18, -0.25), f32(0.8, 0.24, 1.15), colour=colour, kind="cabin",
             salt=salt),
    ]


def branch_variants(seed: int, num_frames: int = 8, fps: float = 10.0,
                    choices: Sequence = (0, 1, 2, 3), **world_kwargs) -> list[dict]:
    """Render the same scene and past with each forced manoeuvre index in ``choices``."""
    world = SyntheticWorld(seed, **world_kwargs)
    return [world.render_clip(num_frames, fps, choices=c) for c in choices]


class SyntheticClipDataset(torch.utils.data.Dataset):
    """Clips from a range of seeds: index i renders world ``seeds[i]``.

    Args:
        seeds: a range (or sequence) of world seeds; use disjoint ranges for train/held-out.
        num_frames: T.
        fps: fixed frame rate, or None to draw each gap uniformly from ``gap_range`` (s).
        gap_range: (min, max) seconds between consecutive frames when fps is None.
        image_size: (h, w).
        world_kwargs: forwarded to :class:`SyntheticWorld`.
    Returns per index the dict of :meth:`SyntheticWorld.render`.
    """

    def __init__(self, seeds: Sequence[int] = range(1000), num_frames: int = 8,
                 fps: float | None = 10.0, gap_range: tuple[float, float] = (1 / 25, 1 / 3),
                 image_size: tuple[int, int] = (224, 224), **world_kwargs):
        self.seeds = list(seeds)
        self.num_frames, self.fps, self.gap_range = num_frames, fps, gap_range
        self.image_size, self.world_kwargs = image_size, world_kwargs

    def __len__(self) -> int:
        return len(self.seeds)

    def __getitem__(self, index: int) -> dict:
        seed = self.seeds[index]
        if self.fps is not None:
            stamps = np.arange(self.num_frames, dtype=np.float64) / self.fps
        else:
            rng = np.random.default_rng([seed, 0x6A9])
            gaps = rng.uniform(*self.gap_range, size=self.num_frames - 1)
            stamps = np.concatenate([[0.0], np.cumsum(gaps)])
        world = SyntheticWorld(seed, self.image_size, **self.world_kwargs)
        return world.render(stamps)
