"""Replica rules and the shared cell queue's leases (pure: no Ray, no server)."""

from harness.generate import cells_wanted
from jobs.replicas import ahead_of_training, free_gpus, next_replica, work_weight
from jobs.work_queue import LeaseQueue


def test_trainings_come_first_then_free_gpus_serve():
    # 8 GPUs, 3 servers, 10 trainings to run: the 5 others all train
    assert free_gpus(8, 3, 1, 10, 1) == 0
    assert free_gpus(8, 3, 1, 4, 1) == 1  # a training ended with fewer left than GPUs: one is free
    assert free_gpus(8, 3, 1, 0, 1) == 5
    assert free_gpus(8, 8, 1, 4, 1) == 0  # never negative
    assert free_gpus(4, 1, 1, 3, 0) == 3  # CPU-only trainings reserve no GPU


def test_the_next_replica_goes_to_the_most_work_per_replica_unless_fixed():
    remaining = {"a": 100.0, "b": 60.0, "c": 0.0}
    assert next_replica(remaining, {"a": 2, "b": 1, "c": 1}, set()) == "b"  # 50 per replica against 60
    assert next_replica(remaining, {"a": 1, "b": 1, "c": 1}, set()) == "a"
    assert next_replica(remaining, {"a": 1, "b": 1, "c": 1}, {"a"}) == "b"
    assert next_replica({"c": 0.0}, {"c": 1}, set()) is None  # no work left: no replica
    # a server with no replica yet comes first, however little work it has (a judge's server)
    assert next_replica({"a": 100.0, "judge": 1e-9}, {"a": 1, "judge": 0}, set()) == "judge"
    # a 4B decodes fewer tokens a second than a 0.8B, but not 5 times fewer (weights are read once a step)
    assert 1.5 < work_weight(400, 1024, "4B") / work_weight(400, 1024, "0.8B") < 4
    assert work_weight(800, 1024, "2B") == 2 * work_weight(400, 1024, "2B")
    assert work_weight(400, 1024, "tiny") == work_weight(400, 1024, None) == 400 * 1024


def test_leases_are_never_given_twice_and_a_dying_driver_gives_its_cells_back():
    q = LeaseQueue()
    q.seed(["c1", "c2", "c3", "c4", "c5"])
    q.seed(["other"])  # a second driver's offer: the same plan, ignored
    a, finished = q.exchange("a", [], 2, [])
    b, _ = q.exchange("b", [], 2, [])
    assert a == ["c1", "c2"] and b == ["c3", "c4"] and not finished
    # a's engine died: it hands back c2 (c1 was recorded); c2 goes first to the next taker
    again, _ = q.exchange("a", ["c1"], 0, ["c2"])
    assert again == []
    b2, _ = q.exchange("b", ["c3"], 3, [])
    assert b2 == ["c2", "c5"]
    assert q.state()["leased"] == {"a": 0, "b": 3}
    # b's task died: the sweep releases what it held, and a takes it
    assert q.release("b") == 3
    rest, finished = q.exchange("a", [], 10, [])
    assert sorted(rest) == ["c2", "c4", "c5"] and not finished
    _, finished = q.exchange("a", rest, 10, [])
    assert finished
    assert q.state()["resolved"] == {"a": 4, "b": 1}


def test_a_cell_handed_back_by_a_driver_that_does_not_hold_it_is_ignored():
    q = LeaseQueue()
    q.seed(["c1"])
    got, _ = q.exchange("a", [], 1, [])
    q.exchange("b", [], 0, ["c1"])  # not b's to give: no duplicate lease
    assert q.exchange("b", [], 1, []) == ([], False)
    assert got == ["c1"]


def test_shard_journals_fold_into_the_run_once_each_and_a_shard_in_use_waits(tmp_path):
    from harness.runstore import RunStore

    run = RunStore(tmp_path)
    with run.shard("a1r0") as s0, run.shard("a1r1") as s1:
        s0.append({"cell_id": "x", "v": 0})
        s1.append({"cell_id": "y", "v": 1})
        s1.append({"cell_id": "x", "v": 2})  # the same cell by two replicas: the first row stands
    held = run.shard("a2r0").open()
    held.append({"cell_id": "z", "v": 3})
    assert run.done_ids_everywhere() == {"x", "y", "z"}
    with RunStore(tmp_path) as store:
        assert store.absorb_shards() == 1
        assert [(r["cell_id"], r["v"]) for r in store.rows()] == [("x", 0), ("y", 1)]
    assert [s.table for s in run.shards()] == ["episodes.a2r0"]  # still being written: left for later
    held.close()
    with RunStore(tmp_path) as store:
        assert store.absorb_shards() == 0
        assert sorted(store.done_ids()) == ["x", "y", "z"]
    assert run.shards() == []


def test_one_replica_starts_ahead_of_the_training_that_ends_last():
    ends = {"4b+v2": (188.5, "4b"), "2b+v1": (124.0, "2b")}
    startup = {"4b": 70.0, "2b": 55.0}
    assert ahead_of_training(100.0, ends, startup, set()) is None  # up at 170: too early, it would idle
    assert ahead_of_training(118.5, ends, startup, set()) == ("4b+v2", "4b")  # up just as it ends
    assert ahead_of_training(150.0, ends, startup, set()) == ("4b+v2", "4b")  # late, still sooner than none
    assert ahead_of_training(150.0, ends, startup, {"4b+v2"}) is None  # once per training
    assert ahead_of_training(190.0, ends, startup, set()) is None  # ended: the replica rule takes over
    # only the training that ends last (the critical path), and only for a server that can be timed
    assert ahead_of_training(80.0, {"2b+v1": (124.0, "2b")}, startup, set()) == ("2b+v1", "2b")
    assert ahead_of_training(150.0, ends, {"2b": 55.0}, set()) is None
    assert ahead_of_training(0.0, {}, startup, set()) is None


def test_the_longest_training_goes_first():
    from jobs.replicas import training_weight

    order = sorted([("0.8B", 3), ("4B", 3), ("2B", 3), ("0.8B", 5)], key=lambda t: training_weight(*t), reverse=True)
    assert order == [("4B", 3), ("2B", 3), ("0.8B", 5), ("0.8B", 3)]


def test_a_driver_giving_cells_back_leases_none_even_with_none_to_give():
    assert cells_wanted(8, 3, giving_back=False) == 5
    assert cells_wanted(8, 10, giving_back=False) == 0
    # its engine is lost with nothing of its own queued: it must not take cells it would drop
    assert cells_wanted(8, 0, giving_back=True) == 0
