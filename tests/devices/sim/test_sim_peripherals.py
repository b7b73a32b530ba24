"""Simulated peripherals as pure state machines: driven with explicit `now`, no event loop, no clock patching."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from devices.datetime_field import DateTime, decode_date_time, encode_date_time
from devices.errors import AttError, DecodeError
from devices.gatt import uuids
from devices.gatt.blood_pressure import decode_blood_pressure_measurement, decode_intermediate_cuff_pressure
from devices.gatt.cgm import decode_cgm_measurement
from devices.gatt.glucose import decode_glucose_measurement
from devices.gatt.heart_rate import decode_heart_rate_measurement
from devices.gatt.racp import (
    FilterType,
    OpCode,
    Operator,
    RacpMessage,
    ResponseCode,
    abort_operation,
    decode_racp,
    encode_racp,
    report_all_records,
    report_number_of_records,
    report_records_from,
)
from devices.sim import (
    BloodPressureCuff,
    CgmSensor,
    GlucoseMeter,
    HeartRateStrap,
    LinkLost,
    Notification,
    Patient,
    PatientProfile,
    SimPeripheral,
    get_scenario,
    vitals_at,
)
from devices.sim.base import Schedule

u = uuids.uuid16_to_str
PROFILE = PatientProfile.generate(5, 0)
T0 = PROFILE.start
PATIENT = Patient(PROFILE, get_scenario("stable"))


def _kw(kind: int) -> dict[str, Any]:
    return {"address": f"C0:DE:00:00:00:{kind:02X}", "name": f"DEV{kind}", "patient": PATIENT}


def _drain(p: SimPeripheral) -> list[Notification | LinkLost]:
    out: list[Notification | LinkLost] = []
    while (e := p.next_event()) is not None:
        out.append(e)
    return out


def test_schedule_catch_up_and_skip() -> None:
    s = Schedule(T0, timedelta(seconds=1), max_catch_up=3)
    assert s.due(T0 - timedelta(seconds=1)) == []
    assert s.due(T0) == [T0]
    assert s.due(T0 + timedelta(seconds=10)) == [T0 + timedelta(seconds=k) for k in (8, 9, 10)]
    s.skip_to(T0 + timedelta(seconds=20.5))
    assert s.next_at == T0 + timedelta(seconds=21)


def test_heart_rate_strap_notifies_every_second_only_when_subscribed() -> None:
    hr = HeartRateStrap(**_kw(1))
    hr.connect(T0)
    hr.handle_timer(T0 + timedelta(seconds=5))
    assert _drain(hr) == []
    assert hr.get_timer() is None
    char = u(uuids.HEART_RATE_MEASUREMENT)
    hr.subscribe(char, T0 + timedelta(seconds=5))
    assert hr.get_timer() == T0 + timedelta(seconds=6)
    hr.handle_timer(T0 + timedelta(seconds=10))
    events = _drain(hr)
    assert len(events) == 5
    for k, e in enumerate(events, start=6):
        assert isinstance(e, Notification)
        assert e.char_uuid == char
        assert not e.indication
        m = decode_heart_rate_measurement(e.data)
        assert m.sensor_contact is True
        assert m.heart_rate == round(vitals_at(PROFILE, "stable", k).heart_rate)
        assert 0.3 < sum(m.rr_intervals_s) < 3.0


def test_bp_cuff_stores_while_disconnected_then_indicates_with_device_time() -> None:
    cuff = BloodPressureCuff(interval=timedelta(minutes=10), clock_offset=timedelta(hours=1, minutes=-3), **_kw(2))
    cuff.handle_timer(T0 + timedelta(minutes=35))  # three measurements while nobody is connected
    assert len(cuff.stored) == 3
    cuff.connect(T0 + timedelta(minutes=36))
    cuff.subscribe(u(uuids.BLOOD_PRESSURE_MEASUREMENT), T0 + timedelta(minutes=36))
    events = _drain(cuff)
    assert [e.indication for e in events if isinstance(e, Notification)] == [True] * 3
    stamps = [decode_blood_pressure_measurement(e.data).timestamp for e in events if isinstance(e, Notification)]
    expected = [DateTime.from_datetime(T0 + timedelta(minutes=10 * k + 57)) for k in (1, 2, 3)]
    assert stamps == expected
    assert not cuff.stored


def test_bp_cuff_intermediate_cuff_pressure_before_result() -> None:
    cuff = BloodPressureCuff(interval=timedelta(minutes=1), **_kw(3))
    now = T0 + timedelta(seconds=5)
    cuff.connect(now)
    cuff.subscribe(u(uuids.INTERMEDIATE_CUFF_PRESSURE), now)
    cuff.subscribe(u(uuids.BLOOD_PRESSURE_MEASUREMENT), now)
    while (timer := cuff.get_timer()) is not None and timer <= T0 + timedelta(seconds=60):
        cuff.handle_timer(timer)
    events = [e for e in _drain(cuff) if isinstance(e, Notification)]
    icp = [decode_intermediate_cuff_pressure(e.data) for e in events[:-1]]
    assert len(icp) == BloodPressureCuff.CUFF_CYCLE_S
    pressures = [float(m.cuff_pressure) for m in icp]
    assert max(pressures) > vitals_at(PROFILE, "stable", 60).systolic
    final = decode_blood_pressure_measurement(events[-1].data)
    assert events[-1].char_uuid == u(uuids.BLOOD_PRESSURE_MEASUREMENT)
    assert final.measurement_status is not None
    assert not final.measurement_status.cuff_too_loose


def test_device_misuse_sets_cuff_too_loose() -> None:
    patient = Patient(PROFILE, get_scenario("device_misuse", onset_s=0))
    cuff = BloodPressureCuff(address="C0:DE:00:00:01:01", name="x", patient=patient)
    m = cuff.measurement(T0 + timedelta(seconds=30))
    assert m.measurement_status is not None
    assert m.measurement_status.cuff_too_loose


def test_gatt_errors_and_device_clock() -> None:
    hr = HeartRateStrap(clock_offset=timedelta(minutes=57), **_kw(4))
    with pytest.raises(AttError) as exc:
        hr.read(u(uuids.HEART_RATE_MEASUREMENT), T0)
    assert exc.value.code == 0x02
    with pytest.raises(AttError) as exc:
        hr.read(u(uuids.GLUCOSE_FEATURE), T0)
    assert exc.value.code == 0x0A
    with pytest.raises(AttError) as exc:
        hr.write(u(uuids.MODEL_NUMBER_STRING), b"x", T0)
    assert exc.value.code == 0x03
    now = T0 + timedelta(seconds=90)
    assert decode_date_time(hr.read(u(uuids.DATE_TIME), now)) == DateTime.from_datetime(now + timedelta(minutes=57))
    current = hr.read(u(uuids.CURRENT_TIME), now)
    assert len(current) == 10
    assert current[7] == (now + timedelta(minutes=57)).isoweekday()
    # the gateway sets the clock to local time (UTC+1): the drift disappears
    hr.write(
        u(uuids.CURRENT_TIME), encode_date_time(DateTime.from_datetime(now + timedelta(hours=1))) + b"\x07\x00\x01", now
    )
    assert hr.clock_offset == timedelta(hours=1)
    with pytest.raises(AttError):
        hr.write(u(uuids.DATE_TIME), b"\x00" * 7, now)


def test_corruption_fault_truncates_next_notification() -> None:
    hr = HeartRateStrap(**_kw(5))
    hr.connect(T0)
    hr.subscribe(u(uuids.HEART_RATE_MEASUREMENT), T0)
    hr.faults.corrupt_next = 1
    hr.handle_timer(T0 + timedelta(seconds=2))
    first, second = _drain(hr)
    assert isinstance(first, Notification)
    assert isinstance(second, Notification)
    with pytest.raises(DecodeError):
        decode_heart_rate_measurement(first.data)
    decode_heart_rate_measurement(second.data)


class _Meter:
    """A connected glucose meter with RACP and measurement subscribed."""

    def __init__(self, history: int = 12) -> None:
        self.meter = GlucoseMeter(history=history, **_kw(6))
        self.now = T0
        self.meter.connect(self.now)
        self.meter.subscribe(u(uuids.GLUCOSE_MEASUREMENT), self.now)
        self.meter.subscribe(u(uuids.RECORD_ACCESS_CONTROL_POINT), self.now)

    def request(self, message: RacpMessage | bytes) -> tuple[list[int], list[RacpMessage], list[LinkLost]]:
        data = message if isinstance(message, bytes) else encode_racp(message)
        self.meter.write(u(uuids.RECORD_ACCESS_CONTROL_POINT), data, self.now)
        return self.run()

    def run(self, until: timedelta = timedelta(seconds=5)) -> tuple[list[int], list[RacpMessage], list[LinkLost]]:
        end = self.now + until
        while (t := self.meter.get_timer()) is not None and t <= end:
            self.now = t
            self.meter.handle_timer(t)
        seqs, responses, lost = [], [], []
        for e in _drain(self.meter):
            if isinstance(e, LinkLost):
                lost.append(e)
            elif e.char_uuid == u(uuids.GLUCOSE_MEASUREMENT):
                seqs.append(decode_glucose_measurement(e.data).sequence_number)
            else:
                assert e.indication
                responses.append(decode_racp(e.data))
        return seqs, responses, lost


def _code(m: RacpMessage) -> tuple[int | None, int | None]:
    return m.request_op_code, m.response_code


def test_racp_report_all_then_from_n_and_count() -> None:
    t = _Meter(history=12)
    seqs, responses, _ = t.request(report_all_records())
    assert seqs == list(range(1, 13))
    assert [_code(r) for r in responses] == [(OpCode.REPORT_STORED_RECORDS, ResponseCode.SUCCESS)]
    seqs, responses, _ = t.request(report_records_from(10))
    assert seqs == [10, 11, 12]
    assert _code(responses[0]) == (1, 1)
    _, responses, _ = t.request(report_number_of_records())
    assert responses[0].op_code == OpCode.NUMBER_OF_STORED_RECORDS_RESPONSE
    assert responses[0].count == 12
    seqs, responses, _ = t.request(report_records_from(13))
    assert seqs == []
    assert _code(responses[0]) == (1, ResponseCode.NO_RECORDS_FOUND)


def test_racp_new_records_keep_increasing_sequence_numbers() -> None:
    t = _Meter(history=2)
    t.meter.handle_timer(T0 + timedelta(hours=13))  # two more finger-stick tests (every 6 h)
    t.now = T0 + timedelta(hours=13)
    seqs, _, _ = t.request(report_records_from(3))
    assert seqs == [3, 4]
    records = list(t.meter.records)
    assert records[-1].base_time == t.meter.date_time(T0 + timedelta(hours=12))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (bytes([1, 0]), (1, ResponseCode.INVALID_OPERATOR)),  # report with null operator
        (bytes([1, 9]), (1, ResponseCode.INVALID_OPERATOR)),
        (bytes([1, 3, 7, 1, 0]), (1, ResponseCode.OPERAND_NOT_SUPPORTED)),  # unknown filter type
        (bytes([1, 4, 1, 9, 0, 2, 0]), (1, ResponseCode.INVALID_OPERAND)),  # range 9..2
        (bytes([1, 3, 1, 5]), (1, ResponseCode.INVALID_OPERAND)),  # truncated operand
        (bytes([9, 1]), (9, ResponseCode.OP_CODE_NOT_SUPPORTED)),
        (bytes([3, 1]), (3, ResponseCode.INVALID_OPERATOR)),  # abort needs the null operator
        (bytes([2, 5]), (2, ResponseCode.SUCCESS)),  # delete first record
    ],
)
def test_racp_response_codes(raw: bytes, expected: tuple[int, int]) -> None:
    _, responses, _ = _Meter().request(raw)
    assert [_code(r) for r in responses] == [expected]


def test_racp_first_last_and_range() -> None:
    t = _Meter(history=8)
    assert t.request(RacpMessage(OpCode.REPORT_STORED_RECORDS, Operator.FIRST_RECORD))[0] == [1]
    assert t.request(RacpMessage(OpCode.REPORT_STORED_RECORDS, Operator.LAST_RECORD))[0] == [8]
    rng = RacpMessage(OpCode.REPORT_STORED_RECORDS, Operator.WITHIN_RANGE_OF, FilterType.SEQUENCE_NUMBER, 3, 5)
    assert t.request(rng)[0] == [3, 4, 5]
    le = RacpMessage(OpCode.REPORT_STORED_RECORDS, Operator.LESS_THAN_OR_EQUAL_TO, FilterType.SEQUENCE_NUMBER, None, 2)
    assert t.request(le)[0] == [1, 2]
    since = t.meter.records[5].base_time
    by_time = RacpMessage(
        OpCode.REPORT_STORED_RECORDS, Operator.GREATER_THAN_OR_EQUAL_TO, FilterType.USER_FACING_TIME, since
    )
    assert t.request(by_time)[0] == [6, 7, 8]


def test_racp_requires_indications_and_one_procedure_at_a_time() -> None:
    meter = GlucoseMeter(**_kw(7))
    meter.connect(T0)
    with pytest.raises(AttError) as exc:
        meter.write(u(uuids.RECORD_ACCESS_CONTROL_POINT), encode_racp(report_all_records()), T0)
    assert exc.value.code == 0xFD
    t = _Meter(history=50)
    t.meter.write(u(uuids.RECORD_ACCESS_CONTROL_POINT), encode_racp(report_all_records()), t.now)
    with pytest.raises(AttError) as exc:
        t.meter.write(u(uuids.RECORD_ACCESS_CONTROL_POINT), encode_racp(report_number_of_records()), t.now)
    assert exc.value.code == 0xFE
    # abort mid-transfer: a few records went out, then the abort response, no success for the report
    t.run(until=timedelta(milliseconds=100))
    _, responses, _ = t.request(abort_operation())
    assert [_code(r) for r in responses] == [(OpCode.ABORT_OPERATION, ResponseCode.SUCCESS)]
    assert t.meter.get_timer() == t.meter.schedule.next_at


def test_racp_disconnect_after_k_records() -> None:
    t = _Meter(history=20)
    t.meter.faults.disconnect_after_racp_records = 7
    seqs, responses, lost = t.request(report_all_records())
    assert seqs == list(range(1, 8))
    assert responses == []
    assert len(lost) == 1
    assert not t.meter.connected
    assert t.meter.faults.disconnect_after_racp_records is None


def test_cgm_every_interval_and_backlog_in_multi_record_notifications() -> None:
    cgm = CgmSensor(records_per_notification=4, **_kw(8))
    cgm.handle_timer(T0 + timedelta(minutes=31))  # six readings while disconnected
    cgm.connect(T0 + timedelta(minutes=31))
    cgm.subscribe(u(uuids.CGM_MEASUREMENT), T0 + timedelta(minutes=31))
    events = [decode_cgm_measurement(e.data) for e in _drain(cgm) if isinstance(e, Notification)]
    assert [len(m.records) for m in events] == [4, 2]
    offsets = [r.time_offset_min for m in events for r in m.records]
    assert offsets == [120 + 5 * k for k in range(1, 7)]
    assert all(r.crc_ok for m in events for r in m.records)
    assert cgm.get_timer() == T0 + timedelta(minutes=35)
    cgm.handle_timer(T0 + timedelta(minutes=35))
    (single,) = _drain(cgm)
    assert isinstance(single, Notification)
    assert len(decode_cgm_measurement(single.data).records) == 1


def test_same_seed_same_bytes() -> None:
    """Two worlds from the same seed produce the same notification bytes at the same simulated instants."""
    from devices.sim import SimWorld

    def stream(seed: int) -> list[bytes]:
        w = SimWorld.create(1, "afib", seed=seed, onset_s=0)
        out: list[bytes] = []
        for kind, char in (("heart_rate", uuids.HEART_RATE_MEASUREMENT), ("cgm", uuids.CGM_MEASUREMENT)):
            p = w.patients[0].devices[kind]
            p.connect(T0)
            p.subscribe(u(char), T0)
            p.handle_timer(T0 + timedelta(minutes=20))
            out += [e.data for e in _drain(p) if isinstance(e, Notification)]
        return out

    a = stream(3)
    assert len(a) > 5
    assert a == stream(3)
    assert a != stream(4)
