"""Record Access Control Point 0x2A52 (write + indicate): requests and responses (GLS v1.0.1 §3.109 / CGMS §3.7 / GSS).

Layout: op code u8, operator u8, operand (variable). Op codes: 1 report stored records, 2 delete stored records, 3 abort
operation, 4 report number of stored records, 5 number of stored records response, 6 response code, 7 combined report,
8 combined report response. Operators: 0 null, 1 all records, 2 less than or equal to, 3 greater than or equal to,
4 within range of (inclusive), 5 first record, 6 last record. Operands of operators 2 and 3: filter type u8 then one
value, of 4: filter type then two values; filter type 1 = sequence number (GLS) or time offset (CGMS), u16;
filter type 2 = user facing time, a Date Time. Response code (op 6): operand = request op code u8 + response code value
u8 (1 success, 2 op code not supported, 3 invalid operator, 4 operator not supported, 5 invalid operand, 6 no records
found, 7 abort unsuccessful, 8 procedure not completed, 9 operand not supported). Number of stored records response
(op 5): operand = count u16 (u32 in some later profiles, u8 from some meters; all accepted).
Examples: report all ``01 01``; report sequence >= N ``01 03 01 <N u16>``; number of records ``04 01``; abort ``03 00``.
Unknown op codes, operators and filter types decode with their operand kept raw (the server then answers "not
supported"); only lengths that contradict a known layout raise :class:`~devices.errors.DecodeError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from devices.datetime_field import DateTime
from devices.errors import EncodeError
from devices.gatt._wire import Reader, Writer, as_bytes


class OpCode(IntEnum):
    """RACP op codes."""

    REPORT_STORED_RECORDS = 1
    DELETE_STORED_RECORDS = 2
    ABORT_OPERATION = 3
    REPORT_NUMBER_OF_STORED_RECORDS = 4
    NUMBER_OF_STORED_RECORDS_RESPONSE = 5
    RESPONSE_CODE = 6
    COMBINED_REPORT = 7
    COMBINED_REPORT_RESPONSE = 8


class Operator(IntEnum):
    """RACP operators."""

    NULL = 0
    ALL_RECORDS = 1
    LESS_THAN_OR_EQUAL_TO = 2
    GREATER_THAN_OR_EQUAL_TO = 3
    WITHIN_RANGE_OF = 4
    FIRST_RECORD = 5
    LAST_RECORD = 6


class FilterType(IntEnum):
    """RACP filter types (1 is "time offset" in CGMS, same u16 layout)."""

    SEQUENCE_NUMBER = 1
    USER_FACING_TIME = 2


class ResponseCode(IntEnum):
    """RACP response code values."""

    SUCCESS = 1
    OP_CODE_NOT_SUPPORTED = 2
    INVALID_OPERATOR = 3
    OPERATOR_NOT_SUPPORTED = 4
    INVALID_OPERAND = 5
    NO_RECORDS_FOUND = 6
    ABORT_UNSUCCESSFUL = 7
    PROCEDURE_NOT_COMPLETED = 8
    OPERAND_NOT_SUPPORTED = 9


def code_name(kind: type[IntEnum], value: int | None) -> str | None:
    """Snake-case name of a code, ``"reserved"`` for unknown values, ``None`` for ``None``."""
    if value is None:
        return None
    try:
        return kind(value).name.lower()
    except ValueError:
        return "reserved"


FilterValue = int | DateTime


@dataclass(frozen=True, slots=True)
class RacpMessage:
    """One RACP value: a request (ops 1-4, 7) or a response (ops 5, 6, 8)."""

    op_code: int
    """An :class:`OpCode` (unknown values are kept)."""
    operator: int = Operator.NULL
    """An :class:`Operator` (unknown values are kept)."""
    filter_type: int | None = None
    """For operators 2, 3, 4: a :class:`FilterType`."""
    minimum: FilterValue | None = None
    """Lower bound (operator 3 ">=", operator 4)."""
    maximum: FilterValue | None = None
    """Upper bound (operator 2 "<=", operator 4)."""
    request_op_code: int | None = None
    """Response code (op 6): the op code being answered."""
    response_code: int | None = None
    """Response code (op 6): a :class:`ResponseCode`."""
    count: int | None = None
    """Number of stored records response (op 5)."""
    operand: bytes = b""
    """Operand bytes not decoded into the fields above (unknown op code, operator or filter type)."""


def report_all_records() -> RacpMessage:
    """``01 01``."""
    return RacpMessage(OpCode.REPORT_STORED_RECORDS, Operator.ALL_RECORDS)


def report_records_from(sequence_number: int) -> RacpMessage:
    """``01 03 01 <N u16>``: records with sequence number >= N."""
    return RacpMessage(
        OpCode.REPORT_STORED_RECORDS, Operator.GREATER_THAN_OR_EQUAL_TO, FilterType.SEQUENCE_NUMBER, sequence_number
    )


def report_number_of_records(operator: int = Operator.ALL_RECORDS) -> RacpMessage:
    """``04 01``."""
    return RacpMessage(OpCode.REPORT_NUMBER_OF_STORED_RECORDS, operator)


def abort_operation() -> RacpMessage:
    """``03 00``."""
    return RacpMessage(OpCode.ABORT_OPERATION, Operator.NULL)


def response(request_op_code: int, code: int) -> RacpMessage:
    """``06 00 <request op> <code>``."""
    return RacpMessage(OpCode.RESPONSE_CODE, Operator.NULL, request_op_code=request_op_code, response_code=code)


def number_of_records_response(count: int) -> RacpMessage:
    """``05 00 <count u16>``."""
    return RacpMessage(OpCode.NUMBER_OF_STORED_RECORDS_RESPONSE, Operator.NULL, count=count)


_REQUESTS = frozenset(
    {
        OpCode.REPORT_STORED_RECORDS,
        OpCode.DELETE_STORED_RECORDS,
        OpCode.REPORT_NUMBER_OF_STORED_RECORDS,
        OpCode.COMBINED_REPORT,
    }
)


def _filter_value(r: Reader, filter_type: int, field: str) -> FilterValue:
    if filter_type == FilterType.SEQUENCE_NUMBER:
        return r.u16(field)
    return r.date_time(field)


def decode_racp(data: bytes) -> RacpMessage:
    """Decode a 0x2A52 value."""
    r = Reader(as_bytes(data))
    op = r.u8("op_code")
    operator = r.u8("operator")
    if op == OpCode.RESPONSE_CODE:
        request = r.u8("request_op_code")
        code = r.u8("response_code")
        r.end("racp")
        return RacpMessage(op, operator, request_op_code=request, response_code=code)
    if op == OpCode.NUMBER_OF_STORED_RECORDS_RESPONSE:
        if r.remaining == 4:
            count = r.u32("count")
        elif r.remaining == 1:  # some meters send a UINT8 count
            count = r.u8("count")
        else:
            count = r.u16("count")
            r.end("racp")
        return RacpMessage(op, operator, count=count)
    if op in _REQUESTS and operator in (
        Operator.LESS_THAN_OR_EQUAL_TO,
        Operator.GREATER_THAN_OR_EQUAL_TO,
        Operator.WITHIN_RANGE_OF,
    ):
        filter_type = r.u8("filter_type")
        if filter_type not in (FilterType.SEQUENCE_NUMBER, FilterType.USER_FACING_TIME):
            return RacpMessage(op, operator, filter_type, operand=r.rest())
        lo = hi = None
        if operator == Operator.LESS_THAN_OR_EQUAL_TO:
            hi = _filter_value(r, filter_type, "maximum")
        elif operator == Operator.GREATER_THAN_OR_EQUAL_TO:
            lo = _filter_value(r, filter_type, "minimum")
        else:
            lo = _filter_value(r, filter_type, "minimum")
            hi = _filter_value(r, filter_type, "maximum")
        r.end("racp")
        return RacpMessage(op, operator, filter_type, lo, hi)
    if (op in _REQUESTS or op == OpCode.ABORT_OPERATION) and operator <= Operator.LAST_RECORD:
        r.end("racp")  # null, all, first, last: no operand (RACP: "operand: none")
        return RacpMessage(op, operator)
    return RacpMessage(op, operator, operand=r.rest())


def _write_filter_value(w: Writer, filter_type: int | None, value: FilterValue | None, field: str) -> None:
    if isinstance(value, DateTime):
        if filter_type != FilterType.USER_FACING_TIME:
            raise EncodeError(f"racp: {field} is a Date Time but the filter type is {filter_type}")
        w.date_time(value, field)
    elif value is None:
        raise EncodeError(f"racp: operator needs {field}")
    else:
        if filter_type != FilterType.SEQUENCE_NUMBER:
            raise EncodeError(f"racp: {field} is an int but the filter type is {filter_type}")
        w.u16(value, field)


def encode_racp(m: RacpMessage) -> bytes:
    """Encode a 0x2A52 value."""
    w = Writer()
    w.u8(m.op_code, "op_code")
    w.u8(m.operator, "operator")
    if m.op_code == OpCode.RESPONSE_CODE:
        if m.request_op_code is None or m.response_code is None:
            raise EncodeError("racp: a response code needs request_op_code and response_code")
        w.u8(m.request_op_code, "request_op_code")
        w.u8(m.response_code, "response_code")
    elif m.op_code == OpCode.NUMBER_OF_STORED_RECORDS_RESPONSE:
        if m.count is None:
            raise EncodeError("racp: a number of stored records response needs count")
        if m.count > 0xFFFF:
            w.u32(m.count, "count")
        else:
            w.u16(m.count, "count")
    elif m.filter_type is not None:
        w.u8(m.filter_type, "filter_type")
        if m.filter_type in (FilterType.SEQUENCE_NUMBER, FilterType.USER_FACING_TIME) and not m.operand:
            if m.operator in (Operator.GREATER_THAN_OR_EQUAL_TO, Operator.WITHIN_RANGE_OF):
                _write_filter_value(w, m.filter_type, m.minimum, "minimum")
            if m.operator in (Operator.LESS_THAN_OR_EQUAL_TO, Operator.WITHIN_RANGE_OF):
                _write_filter_value(w, m.filter_type, m.maximum, "maximum")
    w.raw(m.operand)
    return w.bytes()
