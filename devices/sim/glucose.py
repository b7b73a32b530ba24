"""Simulated glucose meter (GLS 0x1808, records served through RACP) and CGM sensor (CGMS 0x181F).

`GlucoseMeter`: finger-stick results are taken on a schedule (and `history` results exist before the simulation starts),
numbered with increasing sequence numbers and stored with the device's base time. They leave the meter only through the
Record Access Control Point 0x2A52 (GLS §3.3 / RACP): the client enables notifications on Glucose Measurement 0x2A18 and
indications on RACP, then writes a request:
- report stored records (all, <=, >=, within range by sequence number or user facing time, first, last): each record is
  notified on 0x2A18 (one per `record_interval`, like one per connection event), then RACP indicates `06 00 01 01`;
  `06 00 01 06` (no records found) when nothing matches;
- report number of stored records: `05 00 <count u16>`; delete stored records; abort: `06 00 03 01`, stops a transfer.
Errors: RACP not subscribed -> ATT 0xFD; a request while a transfer runs -> ATT 0xFE; bad operator -> response code 3;
unsupported filter type -> 9; unknown op code -> 2; operand problems -> 5.

`CgmSensor`: one record every `interval` (5 min by default) of interstitial glucose with trend and quality and an
E2E-CRC; records missed while no client listens are kept (up to `backlog`) and sent several per notification, as the
CGM Measurement characteristic allows. Session Start Time 0x2AAA gives the base of the records' time offsets.
"""

from __future__ import annotations

import struct
from collections import deque
from datetime import datetime, timedelta
from typing import Any

from devices.datetime_field import DateTime, encode_date_time
from devices.errors import AttError, DecodeError
from devices.gatt import uuids
from devices.gatt.cgm import CgmMeasurement, CgmRecord, crc16_mcrf4xx, encode_cgm_measurement
from devices.gatt.glucose import (
    GlucoseFeature,
    GlucoseFeatureBits,
    GlucoseMeasurement,
    GlucoseSensorStatus,
    SampleLocation,
    SampleType,
    encode_glucose_feature,
    encode_glucose_measurement,
)
from devices.gatt.racp import (
    FilterType,
    OpCode,
    Operator,
    RacpMessage,
    ResponseCode,
    decode_racp,
    encode_racp,
    number_of_records_response,
    response,
)
from devices.ieee11073 import Number
from devices.sim.base import (
    ATT_CCCD_IMPROPERLY_CONFIGURED,
    ATT_PROCEDURE_ALREADY_IN_PROGRESS,
    CharacteristicSpec,
    Schedule,
    ServiceSpec,
    SimPeripheral,
    uuid,
)
from devices.sim.physiology import cgm_glucose_at, glucose_at

GLUCOSE_MEASUREMENT = uuid(uuids.GLUCOSE_MEASUREMENT)
RACP = uuid(uuids.RECORD_ACCESS_CONTROL_POINT)


class GlucoseMeter(SimPeripheral):
    """Blood glucose meter with stored records and a RACP."""

    kind = "glucose_meter"
    primary_service = uuids.GLUCOSE_SERVICE
    FEATURE = GlucoseFeature(
        GlucoseFeatureBits.LOW_BATTERY_DETECTION
        | GlucoseFeatureBits.SENSOR_RESULT_HIGH_LOW_DETECTION
        | GlucoseFeatureBits.TIME_FAULT
    )

    def __init__(
        self,
        *,
        interval: timedelta = timedelta(hours=6),
        history: int = 20,
        memory: int = 500,
        record_interval: timedelta = timedelta(milliseconds=15),
        first_sequence_number: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        start = self.patient.profile.start
        self.records: deque[GlucoseMeasurement] = deque(maxlen=memory)
        """Stored results, oldest first."""
        self.record_interval = record_interval
        self._next_seq = first_sequence_number
        for k in range(history, 0, -1):
            self._take(start - interval * k)
        self.schedule = Schedule(start + interval, interval)
        self._transfer: deque[GlucoseMeasurement] = deque()
        self._transfer_next: datetime | None = None
        self._transfer_sent = 0

    def device_services(self) -> tuple[ServiceSpec, ...]:
        """GLS: measurement (notify), feature (read), RACP (write, indicate)."""
        return (
            ServiceSpec(
                uuid(uuids.GLUCOSE_SERVICE),
                (
                    CharacteristicSpec(GLUCOSE_MEASUREMENT, ("notify",)),
                    CharacteristicSpec(uuid(uuids.GLUCOSE_FEATURE), ("read",)),
                    CharacteristicSpec(RACP, ("write", "indicate")),
                ),
            ),
        )

    def read_device(self, char_uuid: str, now: datetime) -> bytes:
        """Glucose Feature."""
        if char_uuid == uuid(uuids.GLUCOSE_FEATURE):
            return encode_glucose_feature(self.FEATURE)
        return super().read_device(char_uuid, now)

    # --- measurements -----------------------------------------------------------------------------------------------
    def _take(self, at: datetime) -> None:
        mg_dl = round(glucose_at(self.patient.profile, self.patient.scenario, at))
        status = GlucoseSensorStatus(0)
        if mg_dl > 600:
            status |= GlucoseSensorStatus.RESULT_HIGHER_THAN_DEVICE_CAN_PROCESS
        if mg_dl < 20:
            status |= GlucoseSensorStatus.RESULT_LOWER_THAN_DEVICE_CAN_PROCESS
        if self.battery_level < 10:
            status |= GlucoseSensorStatus.DEVICE_BATTERY_LOW
        self.records.append(
            GlucoseMeasurement(
                sequence_number=self._next_seq & 0xFFFF,
                base_time=self.date_time(at),
                time_offset_min=0,
                concentration=Number(mg_dl, -5),  # kg/L: mg/dL x 1e-5 (GLS §3.1.1.3)
                sample_type=SampleType.CAPILLARY_PLASMA,
                sample_location=SampleLocation.FINGER,
                sensor_status=status or None,
            )
        )
        self._next_seq += 1

    def trigger(self, now: datetime) -> None:
        """The patient does a finger-stick test now."""
        self._take(now)

    # --- RACP -------------------------------------------------------------------------------------------------------
    def write_device(self, char_uuid: str, data: bytes, now: datetime) -> None:
        """RACP requests."""
        if char_uuid != RACP:
            super().write_device(char_uuid, data, now)
            return
        if not self.is_subscribed(RACP):
            raise AttError(ATT_CCCD_IMPROPERLY_CONFIGURED, "RACP indications are not enabled")
        op = data[0] if data else 0
        if self._transfer_next is not None and op != OpCode.ABORT_OPERATION:
            raise AttError(ATT_PROCEDURE_ALREADY_IN_PROGRESS, "a RACP procedure is in progress")
        try:
            request = decode_racp(data)
        except DecodeError:
            self._respond(response(op, ResponseCode.INVALID_OPERAND))
            return
        self.handle_timer(now)
        self._racp(request, now)

    def _respond(self, message: RacpMessage) -> None:
        self.emit(RACP, encode_racp(message))

    def _select(self, request: RacpMessage) -> list[GlucoseMeasurement] | ResponseCode:
        op, records = request.operator, list(self.records)
        if op == Operator.ALL_RECORDS:
            return records
        if op == Operator.FIRST_RECORD:
            return records[:1]
        if op == Operator.LAST_RECORD:
            return records[-1:]
        if op not in (Operator.LESS_THAN_OR_EQUAL_TO, Operator.GREATER_THAN_OR_EQUAL_TO, Operator.WITHIN_RANGE_OF):
            return (
                ResponseCode.INVALID_OPERATOR
                if op == Operator.NULL or op > Operator.LAST_RECORD
                else (ResponseCode.OPERATOR_NOT_SUPPORTED)
            )
        if request.filter_type == FilterType.SEQUENCE_NUMBER:
            lo, hi = request.minimum, request.maximum
            if isinstance(lo, DateTime) or isinstance(hi, DateTime):
                return ResponseCode.INVALID_OPERAND
            if lo is not None and hi is not None and lo > hi:
                return ResponseCode.INVALID_OPERAND
            return [
                r
                for r in records
                if (lo is None or r.sequence_number >= lo) and (hi is None or r.sequence_number <= hi)
            ]
        if request.filter_type == FilterType.USER_FACING_TIME:
            tlo = request.minimum.to_datetime() if isinstance(request.minimum, DateTime) else None
            thi = request.maximum.to_datetime() if isinstance(request.maximum, DateTime) else None
            if (request.minimum is not None and tlo is None) or (request.maximum is not None and thi is None):
                return ResponseCode.INVALID_OPERAND
            out = []
            for r in records:
                t = r.base_time.to_datetime()
                if t is not None and (tlo is None or t >= tlo) and (thi is None or t <= thi):
                    out.append(r)
            return out
        return ResponseCode.OPERAND_NOT_SUPPORTED

    def _racp(self, request: RacpMessage, now: datetime) -> None:
        op = request.op_code
        if op == OpCode.ABORT_OPERATION:
            if request.operator != Operator.NULL:
                self._respond(response(op, ResponseCode.INVALID_OPERATOR))
                return
            self._transfer.clear()
            self._transfer_next = None
            self._respond(response(op, ResponseCode.SUCCESS))
            return
        if op not in (
            OpCode.REPORT_STORED_RECORDS,
            OpCode.DELETE_STORED_RECORDS,
            OpCode.REPORT_NUMBER_OF_STORED_RECORDS,
        ):
            self._respond(response(op, ResponseCode.OP_CODE_NOT_SUPPORTED))
            return
        selected = self._select(request)
        if isinstance(selected, ResponseCode):
            self._respond(response(op, selected))
        elif op == OpCode.REPORT_NUMBER_OF_STORED_RECORDS:
            self._respond(number_of_records_response(len(selected)))
        elif not selected:
            self._respond(response(op, ResponseCode.NO_RECORDS_FOUND))
        elif op == OpCode.DELETE_STORED_RECORDS:
            gone = {id(r) for r in selected}
            self.records = deque((r for r in self.records if id(r) not in gone), maxlen=self.records.maxlen)
            self._respond(response(op, ResponseCode.SUCCESS))
        else:
            self._transfer = deque(selected)
            self._transfer_sent = 0
            self._transfer_next = now + self.record_interval

    # --- timers -----------------------------------------------------------------------------------------------------
    def get_timer(self) -> datetime | None:
        """Next record of a running transfer, or next finger-stick test."""
        nxt = self.schedule.next_at
        return nxt if self._transfer_next is None else min(nxt, self._transfer_next)

    def handle_timer(self, now: datetime) -> None:
        """Take due tests; send due records of a transfer; finish it with the RACP response."""
        for at in self.schedule.due(now):
            self._take(at)
        while self._transfer_next is not None and self._transfer_next <= now:
            record = self._transfer.popleft()
            self.emit(GLUCOSE_MEASUREMENT, encode_glucose_measurement(record))
            self._transfer_sent += 1
            limit = self.faults.disconnect_after_racp_records
            if limit is not None and self._transfer_sent >= limit:
                self.faults.disconnect_after_racp_records = None
                self._transfer.clear()
                self._transfer_next = None
                self.drop_link("connection timeout during RACP transfer", now)
                return
            if self._transfer:
                self._transfer_next += self.record_interval
            else:
                self._transfer_next = None
                self._respond(response(OpCode.REPORT_STORED_RECORDS, ResponseCode.SUCCESS))

    def on_disconnect(self, now: datetime) -> None:
        """A transfer does not survive the link."""
        self._transfer.clear()
        self._transfer_next = None


class CgmSensor(SimPeripheral):
    """Continuous glucose monitor: a record every `interval`, several per notification after a gap."""

    kind = "cgm"
    primary_service = uuids.CONTINUOUS_GLUCOSE_MONITORING_SERVICE
    FEATURE_BITS = (1 << 12) | (1 << 13) | (1 << 15)
    """CGM Feature (CGMS §3.2): E2E-CRC supported, trend information, quality."""

    def __init__(
        self,
        *,
        interval: timedelta = timedelta(minutes=5),
        session_age: timedelta = timedelta(hours=2),
        backlog: int = 36,
        records_per_notification: int = 4,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        start = self.patient.profile.start
        self.session_start = start - session_age
        self.schedule = Schedule(start + interval, interval)
        self.interval = interval
        self.backlog: deque[CgmRecord] = deque(maxlen=backlog)
        self.records_per_notification = records_per_notification

    def device_services(self) -> tuple[ServiceSpec, ...]:
        """CGMS: measurement (notify), feature (read), session start time (read), session run time (read)."""
        return (
            ServiceSpec(
                uuid(uuids.CONTINUOUS_GLUCOSE_MONITORING_SERVICE),
                (
                    CharacteristicSpec(uuid(uuids.CGM_MEASUREMENT), ("notify",)),
                    CharacteristicSpec(uuid(uuids.CGM_FEATURE), ("read",)),
                    CharacteristicSpec(uuid(uuids.CGM_SESSION_START_TIME), ("read",)),
                    CharacteristicSpec(uuid(uuids.CGM_SESSION_RUN_TIME), ("read",)),
                ),
            ),
        )

    def _with_crc(self, body: bytes) -> bytes:
        return body + struct.pack("<H", crc16_mcrf4xx(body))

    def read_device(self, char_uuid: str, now: datetime) -> bytes:
        """Feature (CGMS §3.2), Session Start Time (§3.4: local time, zone, DST), Session Run Time (§3.5, hours)."""
        if char_uuid == uuid(uuids.CGM_FEATURE):
            # 24-bit features, type (low nibble: 9 = ISF) / sample location (high nibble: 5 = subcutaneous tissue).
            return self._with_crc(self.FEATURE_BITS.to_bytes(3, "little") + bytes((0x59,)))
        if char_uuid == uuid(uuids.CGM_SESSION_START_TIME):
            zone_quarters = round(self.clock_offset.total_seconds() / 900)
            body = encode_date_time(self.date_time(self.session_start)) + struct.pack("<bB", zone_quarters, 0)
            return self._with_crc(body)
        if char_uuid == uuid(uuids.CGM_SESSION_RUN_TIME):
            return self._with_crc(struct.pack("<H", 14 * 24))
        return super().read_device(char_uuid, now)

    def record(self, at: datetime) -> CgmRecord:
        """The record for the reading at `at`."""
        profile, scenario = self.patient.profile, self.patient.scenario
        g = cgm_glucose_at(profile, scenario, at)
        before = cgm_glucose_at(profile, scenario, at - timedelta(minutes=5))
        offset = int((at - self.session_start).total_seconds() // 60)
        return CgmRecord(
            glucose=Number(round(min(400.0, max(40.0, g))), 0),
            time_offset_min=offset & 0xFFFF,
            trend=Number(round((g - before) / 5.0 * 10), -1),
            quality=Number(100, 0),
            e2e_crc=True,
        )

    def get_timer(self) -> datetime | None:
        """Next reading."""
        return self.schedule.next_at

    def handle_timer(self, now: datetime) -> None:
        """Take due readings and send the backlog if a client listens."""
        for at in self.schedule.due(now):
            self.backlog.append(self.record(at))
        self._flush()

    def on_subscribe(self, char_uuid: str, now: datetime) -> None:
        """Send what accumulated while nobody listened."""
        self.handle_timer(now)

    def _flush(self) -> None:
        char = uuid(uuids.CGM_MEASUREMENT)
        while self.backlog and self.connected and self.is_subscribed(char):
            batch = [self.backlog.popleft() for _ in range(min(self.records_per_notification, len(self.backlog)))]
            self.emit(char, encode_cgm_measurement(CgmMeasurement(tuple(batch))))
