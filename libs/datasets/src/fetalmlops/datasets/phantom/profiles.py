"""Scanner profiles: what differs between a high-end cart system and a low-cost portable probe.

The differences (resolution, frequency, gain, noise, dynamic range, time-gain compensation) are
the domain shift the monitor must detect and out-of-domain evaluation must measure. Manufacturer
and model names are fictitious.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ScannerProfile:
    name: str
    manufacturer: str
    model: str
    probe: str
    rows: int  # output frame
    cols: int
    axial_samples: int  # beamformed lines: the true resolution before scan conversion
    lateral_samples: int
    depth_mm: float
    half_angle_deg: float  # the sector spans ±half_angle around the vertical
    frequency_mhz: float
    attenuation_db_cm_mhz: float  # one-way soft-tissue attenuation
    tgc: float  # fraction of the round-trip attenuation the time-gain compensation undoes
    gain_db: float
    dynamic_range_db: float
    noise_floor: float  # electronic noise relative to the mean tissue echo
    psf_axial: float  # speckle grain, in samples
    psf_lateral: float
    gamma: float  # display map

    @property
    def device(self) -> str:
        return f"{self.manufacturer} {self.model}"


PROFILES: dict[str, ScannerProfile] = {
    p.name: p
    for p in (
        ScannerProfile(
            name="highend-a",
            manufacturer="Sonora Systems",
            model="Sonora X9",
            probe="C2-9",
            rows=600,
            cols=800,
            axial_samples=420,
            lateral_samples=256,
            depth_mm=115.0,
            half_angle_deg=36.0,
            frequency_mhz=5.0,
            attenuation_db_cm_mhz=0.5,
            tgc=0.95,
            gain_db=0.0,
            dynamic_range_db=62.0,
            noise_floor=0.0015,
            psf_axial=1.0,
            psf_lateral=1.4,
            gamma=1.0,
        ),
        ScannerProfile(
            name="highend-b",
            manufacturer="Meridian Imaging",
            model="Meridian V7",
            probe="RAB4-8",
            rows=576,
            cols=768,
            axial_samples=384,
            lateral_samples=224,
            depth_mm=120.0,
            half_angle_deg=34.0,
            frequency_mhz=4.0,
            attenuation_db_cm_mhz=0.5,
            tgc=0.9,
            gain_db=2.0,
            dynamic_range_db=58.0,
            noise_floor=0.002,
            psf_axial=1.1,
            psf_lateral=1.6,
            gamma=0.9,
        ),
        ScannerProfile(
            name="portable",
            manufacturer="PocketEcho",
            model="PocketScan C3",
            probe="C3 convex",
            rows=480,
            cols=640,
            axial_samples=220,
            lateral_samples=112,
            depth_mm=130.0,
            half_angle_deg=30.0,
            frequency_mhz=3.5,
            attenuation_db_cm_mhz=0.6,
            tgc=0.7,
            gain_db=6.0,
            dynamic_range_db=44.0,
            noise_floor=0.012,
            psf_axial=1.4,
            psf_lateral=2.0,
            gamma=1.25,
        ),
    )
}

DEFAULT_MIX = ("highend-a", "highend-b", "portable")
