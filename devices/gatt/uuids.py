"""Bluetooth SIG assigned numbers used by tbib (Assigned Numbers §3.4 services, §3.8 characteristics).

16-bit values are ints; :func:`uuid16_to_str` gives the full 128-bit form built on the Bluetooth Base UUID
(Core v5.4 Vol 3 Part B §2.5.1), as bleak and BlueZ print it.
"""

from __future__ import annotations

import re
from typing import Final

BASE_UUID_SUFFIX: Final = "-0000-1000-8000-00805f9b34fb"

# --- services -------------------------------------------------------------------------------------------------------
GENERIC_ACCESS_SERVICE: Final = 0x1800
CURRENT_TIME_SERVICE: Final = 0x1805
GLUCOSE_SERVICE: Final = 0x1808
HEALTH_THERMOMETER_SERVICE: Final = 0x1809
DEVICE_INFORMATION_SERVICE: Final = 0x180A
HEART_RATE_SERVICE: Final = 0x180D
BATTERY_SERVICE: Final = 0x180F
BLOOD_PRESSURE_SERVICE: Final = 0x1810
WEIGHT_SCALE_SERVICE: Final = 0x181D
CONTINUOUS_GLUCOSE_MONITORING_SERVICE: Final = 0x181F
PULSE_OXIMETER_SERVICE: Final = 0x1822

# --- characteristics ------------------------------------------------------------------------------------------------
DATE_TIME: Final = 0x2A08
LOCAL_TIME_INFORMATION: Final = 0x2A0F
BATTERY_LEVEL: Final = 0x2A19
TEMPERATURE_MEASUREMENT: Final = 0x2A1C
TEMPERATURE_TYPE: Final = 0x2A1D
INTERMEDIATE_TEMPERATURE: Final = 0x2A1E
MEASUREMENT_INTERVAL: Final = 0x2A21
SYSTEM_ID: Final = 0x2A23
MODEL_NUMBER_STRING: Final = 0x2A24
SERIAL_NUMBER_STRING: Final = 0x2A25
FIRMWARE_REVISION_STRING: Final = 0x2A26
HARDWARE_REVISION_STRING: Final = 0x2A27
SOFTWARE_REVISION_STRING: Final = 0x2A28
MANUFACTURER_NAME_STRING: Final = 0x2A29
CURRENT_TIME: Final = 0x2A2B
GLUCOSE_MEASUREMENT: Final = 0x2A18
GLUCOSE_MEASUREMENT_CONTEXT: Final = 0x2A34
BLOOD_PRESSURE_MEASUREMENT: Final = 0x2A35
INTERMEDIATE_CUFF_PRESSURE: Final = 0x2A36
HEART_RATE_MEASUREMENT: Final = 0x2A37
BODY_SENSOR_LOCATION: Final = 0x2A38
HEART_RATE_CONTROL_POINT: Final = 0x2A39
BLOOD_PRESSURE_FEATURE: Final = 0x2A49
GLUCOSE_FEATURE: Final = 0x2A51
RECORD_ACCESS_CONTROL_POINT: Final = 0x2A52
PLX_SPOT_CHECK_MEASUREMENT: Final = 0x2A5E
PLX_CONTINUOUS_MEASUREMENT: Final = 0x2A5F
PLX_FEATURES: Final = 0x2A60
WEIGHT_MEASUREMENT: Final = 0x2A9D
WEIGHT_SCALE_FEATURE: Final = 0x2A9E
CGM_MEASUREMENT: Final = 0x2AA7
CGM_FEATURE: Final = 0x2AA8
CGM_STATUS: Final = 0x2AA9
CGM_SESSION_START_TIME: Final = 0x2AAA
CGM_SESSION_RUN_TIME: Final = 0x2AAB
CGM_SPECIFIC_OPS_CONTROL_POINT: Final = 0x2AAC

# --- descriptors ----------------------------------------------------------------------------------------------------
CLIENT_CHARACTERISTIC_CONFIGURATION: Final = 0x2902

_FULL: Final = re.compile(r"^0000([0-9a-f]{4})-0000-1000-8000-00805f9b34fb$")
_SHORT: Final = re.compile(r"^(?:0x)?([0-9a-f]{4})$")


def uuid16_to_str(uuid16: int) -> str:
    """``0x2A37 -> "00002a37-0000-1000-8000-00805f9b34fb"``."""
    if not 0 <= uuid16 <= 0xFFFF:
        raise ValueError(f"not a 16-bit UUID: {uuid16!r}")
    return f"0000{uuid16:04x}{BASE_UUID_SUFFIX}"


def uuid_to_uuid16(value: str | int) -> int:
    """The 16-bit value of ``"2A37"``, ``"0x2a37"``, a full Base-UUID string, or an int; ``ValueError`` otherwise."""
    if isinstance(value, int):
        if 0 <= value <= 0xFFFF:
            return value
        raise ValueError(f"not a 16-bit UUID: {value!r}")
    text = value.strip().lower()
    match = _SHORT.match(text) or _FULL.match(text)
    if match is None:
        raise ValueError(f"not a 16-bit SIG UUID: {value!r}")
    return int(match.group(1), 16)
