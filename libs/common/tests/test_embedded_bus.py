"""Embedded-only behaviour: how a group splits partitions, as Kafka's range-like assignment does."""

from fetalmlops.common.bus import EmbeddedBus


def test_group_members_split_partitions_and_each_record_goes_to_one_member() -> None:
    bus = EmbeddedBus(partitions=4)
    a, b = bus.subscribe(["t"], "g"), bus.subscribe(["t"], "g")
    for i in range(40):
        bus.publish("t", f"key-{i}", str(i).encode())

    got_a, got_b = a.poll(0.1), b.poll(0.1)
    assert got_a and got_b
    assert {r.partition for r in got_a}.isdisjoint({r.partition for r in got_b})
    assert sorted(int(r.value) for r in got_a + got_b) == list(range(40))


def test_leaving_member_hands_its_partitions_over_from_the_committed_offset() -> None:
    bus = EmbeddedBus(partitions=2)
    a, b = bus.subscribe(["t"], "g"), bus.subscribe(["t"], "g")
    for i in range(20):
        bus.publish("t", f"key-{i}", str(i).encode())
    taken_by_a = a.poll(0.1)
    a.commit(taken_by_a[0])  # only the first one is done
    a.close()

    redelivered = [r for r in b.poll(0.1) if r.partition == taken_by_a[0].partition]
    assert [r.offset for r in redelivered] == [r.offset for r in taken_by_a[1:]]
    assert bus.committed("g", "t", taken_by_a[0].partition) == 1


def test_poll_waits_for_a_publish_from_another_thread() -> None:
    import threading

    bus = EmbeddedBus(partitions=1)
    subscription = bus.subscribe(["t"], "g")
    threading.Timer(0.05, bus.publish, args=("t", "k", b"late")).start()
    assert [r.value for r in subscription.poll(5.0)] == [b"late"]
