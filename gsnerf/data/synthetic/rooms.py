"""Room kinds and the room generator: what each kind contains, in which order it is placed.

Doors and windows (with their curtains) go on the walls first, then the kind's required
furniture groups, then a random number of optional objects, then pictures. Context is part of
the task: a toilet stands in a room with a bathtub and a sink, chairs stand around tables and in
front of desks, nightstands beside a bed's headboard, curtains beside windows, a coffee table in
front of a sofa.
"""

import numpy as np

from gsnerf.data.synthetic import fixtures, furniture, storage
from gsnerf.data.synthetic.categories import raw_id
from gsnerf.data.synthetic.floorplan import PartFootprint
from gsnerf.data.synthetic.layout import Room, RoomBuilder, RoomCfg, RoomKind
from gsnerf.data.synthetic.materials import WALL_PAINTS

# Probability of each room kind.
KIND_WEIGHTS = {
    RoomKind.BEDROOM: 0.25,
    RoomKind.LIVING_ROOM: 0.25,
    RoomKind.KITCHEN: 0.18,
    RoomKind.BATHROOM: 0.12,
    RoomKind.OFFICE: 0.2,
}


def _door(b: RoomBuilder) -> None:
    obj = fixtures.door(b.rng, b.ms)
    pose = b.against_wall(obj, gap=0.0, jitter=0.0)
    if pose is not None:
        # Keep the swing area free of furniture (the camera may still pass there).
        centre = b.in_front(pose, obj.half_depth + obj.half_width)
        b.plan.add(
            [PartFootprint(centre, (obj.half_width, obj.half_width), pose.yaw, 0.0, 2.2)],
            obstacle=False,
        )


def _table_group(b: RoomBuilder) -> None:
    table = furniture.table(b.rng, b.ms)
    pose = b.free_standing(table, yaw_jitter=0.3)
    if pose is None:
        return
    hw, hd = table.half_width, table.half_depth
    slots = [
        (-hw * 0.5, -hd - 0.25),
        (hw * 0.5, -hd - 0.25),
        (-hw * 0.5, hd + 0.25),
        (hw * 0.5, hd + 0.25),
        (-hw - 0.25, 0.0),
        (hw + 0.25, 0.0),
    ]
    chairs = int(b.rng.integers(1, len(slots) + 1))
    for index in b.rng.permutation(len(slots))[:chairs]:
        x, y = b.local_point(pose, *slots[int(index)])
        b.facing(furniture.chair(b.rng, b.ms), x, y, (pose.x, pose.y), jitter=0.35)


def _desk_group(b: RoomBuilder) -> None:
    desk = storage.desk(b.rng, b.ms)
    pose = b.against_wall(desk)
    if pose is not None and b.rng.random() < 0.85:
        x, y = b.in_front(pose, desk.half_depth + b.rng.uniform(0.2, 0.45))
        b.facing(furniture.chair(b.rng, b.ms), x, y, (pose.x, pose.y), jitter=0.5)


def _sofa_group(b: RoomBuilder) -> None:
    sofa = furniture.sofa(b.rng, b.ms)
    pose = b.against_wall(sofa) if b.rng.random() < 0.75 else b.free_standing(sofa, 0.2)
    if pose is not None and b.rng.random() < 0.8:
        coffee = furniture.table(b.rng, b.ms, coffee=True)
        x, y = b.in_front(pose, sofa.half_depth + coffee.half_depth + b.rng.uniform(0.3, 0.5))
        b.facing(coffee, x, y, b.in_front(pose, -1.0), jitter=0.1)


def _bed_group(b: RoomBuilder) -> None:
    bed = furniture.bed(b.rng, b.ms)
    pose = b.against_wall(bed)
    if pose is None:
        return
    for side in (-1.0, 1.0):
        if b.rng.random() < 0.7:
            stand = furniture.nightstand(b.rng, b.ms)
            x, y = b.local_point(
                pose,
                side * (bed.half_width + stand.half_width + 0.05),
                bed.half_depth - stand.half_depth,
            )
            b.facing(stand, x, y, b.in_front(pose, 2.0 * bed.half_depth), jitter=0.05)


def _counter(b: RoomBuilder) -> None:
    for _ in range(b.cfg.placement_tries):
        wall = int(b.rng.integers(4))
        room_wall = b.wall_length(wall)
        length = b.rng.uniform(1.2, max(1.3, room_wall - 0.4))
        obj = fixtures.counter(b.rng, b.ms, length, b.size[2])
        along = b.rng.uniform(obj.half_width, room_wall - obj.half_width)
        if b.try_place(obj, b.wall_pose(wall, along, obj.half_depth + 0.005)):
            return


def _wall_object(make):
    return lambda b: b.against_wall(make(b.rng, b.ms))


def _anywhere(make):
    return lambda b: b.free_standing(make(b.rng, b.ms), yaw_jitter=np.pi)


# Required groups and optional (weight, placer) pools per room kind.
REQUIRED = {
    RoomKind.BEDROOM: [_bed_group],
    RoomKind.LIVING_ROOM: [_sofa_group],
    RoomKind.KITCHEN: [_counter, _wall_object(fixtures.refrigerator)],
    RoomKind.BATHROOM: [
        _wall_object(fixtures.toilet),
        _wall_object(fixtures.bathroom_sink),
        _wall_object(fixtures.bathtub),
    ],
    RoomKind.OFFICE: [_desk_group],
}
_CABINET = _wall_object(storage.cabinet)
_SHELF = _wall_object(storage.bookshelf)
_BOX = _anywhere(storage.storage_box)
_CHAIR = _anywhere(furniture.chair)
OPTIONAL = {
    RoomKind.BEDROOM: [
        (3, _CABINET),
        (2, _desk_group),
        (2, _SHELF),
        (1, _wall_object(storage.tv_stand)),
        (1, _anywhere(furniture.ottoman)),
        (1, _BOX),
        (1, _CHAIR),
        (1, _table_group),
    ],
    RoomKind.LIVING_ROOM: [
        (3, _wall_object(storage.tv_stand)),
        (3, _SHELF),
        (2, _CABINET),
        (2, _table_group),
        (2, _CHAIR),
        (1, _anywhere(furniture.ottoman)),
        (1, _BOX),
        (1, _sofa_group),
        (1, _desk_group),
    ],
    RoomKind.KITCHEN: [
        (3, _table_group),
        (2, _CABINET),
        (1, _BOX),
        (1, _CHAIR),
        (1, _counter),
        (1, _SHELF),
    ],
    RoomKind.BATHROOM: [(2, _CABINET), (1, _BOX), (1, _wall_object(fixtures.bathroom_sink))],
    RoomKind.OFFICE: [
        (3, _SHELF),
        (3, _CABINET),
        (2, _desk_group),
        (2, _table_group),
        (1, _sofa_group),
        (1, _BOX),
        (1, _CHAIR),
    ],
}


def _shell(b: RoomBuilder, kind: RoomKind) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Materials and raw ids of the four walls, the floor and the ceiling."""
    ms, roll = b.ms, b.rng.random()
    tiled = {RoomKind.BATHROOM: 0.6, RoomKind.KITCHEN: 0.25}.get(kind, 0.08)
    if roll < tiled:
        wall = ms.tiles()
    elif roll < tiled + 0.1:
        wall = ms.wallpaper()
    else:
        wall = ms.plaster()
    walls = [wall] * 4
    if b.rng.random() < 0.15:
        walls[int(b.rng.integers(4))] = ms.plaster()
    roll = b.rng.random()
    if kind == RoomKind.BATHROOM:
        floor = ms.tiles(checker=roll < 0.3)
    elif kind == RoomKind.KITCHEN:
        floor = ms.tiles(checker=roll < 0.2) if roll < 0.6 else ms.planks()
    else:
        floor = ms.planks() if roll < 0.5 else (ms.carpet() if roll < 0.8 else ms.tiles())
    ceiling = ms.plaster(WALL_PAINTS[:4])
    faces = walls + [floor, ceiling]
    names = ["wall"] * 4 + ["floor", "ceiling"]
    return tuple(raw_id(n) for n in names), tuple(b.material_index(m) for m in faces)


def generate_room(rng: np.random.Generator, cfg: RoomCfg) -> Room:
    """A furnished room of a random kind (deterministic given the generator's state)."""
    kinds = list(KIND_WEIGHTS)
    weights = np.array([KIND_WEIGHTS[k] for k in kinds])
    kind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
    width_max, depth_max = cfg.width_max, cfg.depth_max
    if kind == RoomKind.BATHROOM:
        width_max = min(width_max, cfg.bathroom_size_max)
        depth_max = min(depth_max, cfg.bathroom_size_max)
    size = (
        float(rng.uniform(cfg.width_min, max(cfg.width_min, width_max))),
        float(rng.uniform(cfg.depth_min, max(cfg.depth_min, depth_max))),
        float(rng.uniform(cfg.height_min, cfg.height_max)),
    )
    b = RoomBuilder(rng, cfg, size)
    shell_ids, shell_materials = _shell(b, kind)
    _door(b)
    if rng.random() < 0.2:
        _door(b)
    windows = int(rng.integers(0, cfg.max_windows + 1))
    curtain_p = 0.2 if kind == RoomKind.BATHROOM else 0.6
    for _ in range(windows):
        b.against_wall(
            fixtures.window(rng, b.ms, size[2], rng.random() < curtain_p), gap=0.0, jitter=0.0
        )
    for place in REQUIRED[kind]:
        place(b)
    pool = OPTIONAL[kind]
    weights = np.array([w for w, _ in pool], dtype=np.float64)
    count = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    for index in rng.choice(len(pool), size=count, p=weights / weights.sum()):
        pool[int(index)][1](b)
    for _ in range(int(rng.integers(0, cfg.max_pictures + 1))):
        b.against_wall(fixtures.picture(rng, b.ms), gap=0.0, jitter=0.0)
    return Room(
        kind,
        size,
        b.primitives,
        b.materials,
        shell_ids,
        shell_materials,
        b.plan.obstacle.copy(),
        cfg.grid_cell,
        dict(b.counts),
    )
