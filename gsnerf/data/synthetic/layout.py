"""Room layout: the room model and the placement of objects without interpenetration.

A room is a floor, four walls and a ceiling (the shell) plus objects made of analytic
primitives, each primitive carrying its raw category id and its object's instance id. The
:class:`RoomBuilder` places objects against a wall (facing into the room, with a small yaw
jitter), free-standing (any yaw), or at a point facing a target (chairs around a table); every
placement is checked on a :class:`FloorPlan`. The order in which a room kind places its objects
lives in rooms.py.
"""

from dataclasses import dataclass
from enum import Enum

import numpy as np
from jaxtyping import Bool

from gsnerf.data.synthetic.categories import raw_id
from gsnerf.data.synthetic.floorplan import FloorPlan, PartFootprint, Pose2d, footprints
from gsnerf.data.synthetic.materials import Material, MaterialSampler
from gsnerf.data.synthetic.parts import Furniture
from gsnerf.data.synthetic.primitives import Primitive


@dataclass
class RoomCfg:
    # Room extent along x, metres (ScanNet rooms are mostly 3 to 7 m across).
    width_min: float = 3.2
    width_max: float = 6.0
    # Room extent along y, metres.
    depth_min: float = 3.2
    depth_max: float = 6.0
    # Floor-to-ceiling height, metres.
    height_min: float = 2.4
    height_max: float = 3.0
    # Largest side of a bathroom, metres (bathrooms are drawn from the small end of the range).
    bathroom_size_max: float = 3.6
    # Optional objects added to each room beyond its kind's required ones (inclusive range).
    min_objects: int = 3
    # Largest number of optional objects per room.
    max_objects: int = 7
    # Largest number of windows per room.
    max_windows: int = 2
    # Largest number of pictures per room.
    max_pictures: int = 3
    # Side of a floor-plan cell, metres.
    grid_cell: float = 0.05
    # Clearance kept between objects, metres.
    object_gap: float = 0.03
    # Parts starting below this height stand on the floor; higher ones hang, metres.
    standing_limit: float = 0.3
    # Random positions tried per object before it is left out.
    placement_tries: int = 40


class RoomKind(str, Enum):
    BEDROOM = "bedroom"
    LIVING_ROOM = "living_room"
    KITCHEN = "kitchen"
    BATHROOM = "bathroom"
    OFFICE = "office"


# Shell faces in order: walls at x = 0 and x = width, walls at y = 0 and y = depth, floor, ceiling.
SHELL_FACES = 6


@dataclass
class Room:
    """Everything needed to render a room and move a camera through it."""

    kind: RoomKind
    size: tuple[float, float, float]  # width (x), depth (y), height (z), metres
    primitives: list[Primitive]  # the objects' primitives (the shell is separate)
    materials: list[Material]
    shell_raw_ids: tuple[int, ...]  # raw category id of each shell face (SHELL_FACES order)
    shell_materials: tuple[int, ...]  # material index of each shell face
    obstacles: Bool[np.ndarray, "gx gy"]  # floor cells covered by an object
    cell: float  # side of an obstacle cell, metres
    object_counts: dict[str, int]  # placed objects per kind


class RoomBuilder:
    """Places objects in one room and collects their primitives and materials."""

    def __init__(self, rng: np.random.Generator, cfg: RoomCfg, size: tuple[float, float, float]):
        self.rng, self.cfg, self.size = rng, cfg, size
        self.ms = MaterialSampler(rng)
        self.plan = FloorPlan(size[0], size[1], cfg.grid_cell, cfg.standing_limit, cfg.object_gap)
        self.primitives: list[Primitive] = []
        self.materials: list[Material] = []
        self.counts: dict[str, int] = {}

    def material_index(self, material: Material) -> int:
        for index, known in enumerate(self.materials):
            if known is material:
                return index
        self.materials.append(material)
        return len(self.materials) - 1

    def commit(self, obj: Furniture, pose: Pose2d, feet: list[PartFootprint]) -> None:
        self.plan.add(feet)
        instance = sum(self.counts.values())
        self.counts[obj.name] = self.counts.get(obj.name, 0) + 1
        cos, sin = np.cos(pose.yaw), np.sin(pose.yaw)
        for part in obj.parts:
            px, py, pz = part.center
            center = (
                float(pose.x + cos * px - sin * py),
                float(pose.y + sin * px + cos * py),
                float(pz),
            )
            self.primitives.append(
                Primitive(
                    part.kind,
                    center,
                    part.half_size,
                    float(pose.yaw + part.yaw),
                    raw_id(part.category),
                    instance,
                    self.material_index(part.material),
                )
            )

    def try_place(self, obj: Furniture, pose: Pose2d) -> bool:
        feet = footprints(obj, pose)
        if not self.plan.fits(feet):
            return False
        self.commit(obj, pose, feet)
        return True

    def wall_pose(self, wall: int, along: float, offset: float) -> Pose2d:
        """Pose at ``along`` metres on ``wall`` (0: y=0, 1: x=W, 2: y=D, 3: x=0), ``offset``
        metres into the room, facing the room (object front = wall's inward normal)."""
        width, depth, _ = self.size
        start = [(0.0, 0.0), (width, 0.0), (width, depth), (0.0, depth)][wall]
        direction = [(1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0)][wall]
        normal = (-direction[1], direction[0])
        x = start[0] + along * direction[0] + offset * normal[0]
        y = start[1] + along * direction[1] + offset * normal[1]
        return Pose2d(float(x), float(y), float(np.arctan2(normal[0], -normal[1])))

    def wall_length(self, wall: int) -> float:
        return self.size[0] if wall % 2 == 0 else self.size[1]

    def against_wall(
        self, obj: Furniture, gap: float = 0.01, jitter: float = 0.03
    ) -> Pose2d | None:
        """Place ``obj`` with its back to a random wall; returns the pose or None."""
        for _ in range(self.cfg.placement_tries):
            wall = int(self.rng.integers(4))
            length = self.wall_length(wall)
            if length < 2 * obj.half_width + 0.1:
                continue
            along = self.rng.uniform(obj.half_width + 0.05, length - obj.half_width - 0.05)
            pose = self.wall_pose(wall, along, obj.half_depth + gap)
            pose = Pose2d(pose.x, pose.y, pose.yaw + self.rng.uniform(-jitter, jitter))
            if self.try_place(obj, pose):
                return pose
        return None

    def free_standing(self, obj: Furniture, yaw_jitter: float = 0.25) -> Pose2d | None:
        width, depth, _ = self.size
        for _ in range(self.cfg.placement_tries):
            x, y = self.rng.uniform(0.3, width - 0.3), self.rng.uniform(0.3, depth - 0.3)
            yaw = int(self.rng.integers(4)) * np.pi / 2 + self.rng.uniform(-yaw_jitter, yaw_jitter)
            pose = Pose2d(float(x), float(y), float(yaw))
            if self.try_place(obj, pose):
                return pose
        return None

    def facing(
        self, obj: Furniture, x: float, y: float, target: tuple[float, float], jitter: float
    ) -> bool:
        """Place ``obj`` at (x, y) with its front turned towards ``target``."""
        yaw = np.arctan2(target[0] - x, -(target[1] - y)) + self.rng.uniform(-jitter, jitter)
        return self.try_place(obj, Pose2d(float(x), float(y), float(yaw)))

    def in_front(self, anchor: Pose2d, distance: float) -> tuple[float, float]:
        """Point ``distance`` metres in front of an object placed at ``anchor``."""
        return (anchor.x + np.sin(anchor.yaw) * distance, anchor.y - np.cos(anchor.yaw) * distance)

    def local_point(self, anchor: Pose2d, px: float, py: float) -> tuple[float, float]:
        cos, sin = np.cos(anchor.yaw), np.sin(anchor.yaw)
        return (float(anchor.x + cos * px - sin * py), float(anchor.y + sin * px + cos * py))
