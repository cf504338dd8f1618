"""The one face record: a face of one image or video frame, from the tracker to every sink, the WebRTC data channel,
VMC and the Python API (``damdnet.Face`` is this class). The aligner's per-crop batch (``model.aligner.AlignResult``)
is the only other face type.

Who fills what: ``tracking.tracker.FaceTracker.update`` makes one per validly aligned face (track id, box, ROI,
smoothed parameters, landmarks and ``ext``, pose, confidence, the frame and the tracker's bookkeeping);
``stream.analyze.FaceAnalyzer`` adds what it computes for the whole frame at once (``vertices``,
``blendshape_values``) to the same object; ``damdnet.Session.align_image`` makes them from the aligner's result for a
photo (``score``, no track). Nothing copies a face into another type.

Pixels are frame pixels: x right, y down, z toward the camera (scaled like x); DESIGN.md section 7.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Face:
    """One face in an image or a video frame.

    box: (4,) float32 x1, y1, x2, y2 px (the detector's box for images, the tracker's for videos: the tight box of
        the landmarks).
    landmarks: (68, 3) float32 px, the 68-point (iBUG) order (for videos decoded from the smoothed parameters).
    pose: (6,) float32 yaw, pitch, roll (degrees), scale (crop px per micrometre of the 3DMM), tx, ty (crop px of
        the 120 px crop ``roi``, y up); docs/INTERFACES.md, "Track files", has each unit and how to map it to px.
    params: (62,) float32 real 3DMM parameters: camera (12, a 3x4 matrix row-major) | shape (40) | expression (10),
        in the crop of ``roi`` (smoothed for videos).
    roi: (4,) float32 the crop box the network saw, px.
    vertices: (V, 3) float32 dense mesh in px when asked for (``dense=True``, meshes, mesh render modes), else None;
        triangles: ``Session.triangles``. Landmarks and vertices include the extended expression (closed eyes, ...).
    score: detector score in [0, 1] (images), None for tracked faces.
    track_id: stable id of the tracked face across frames (videos, streams; per image for stills), None for images
        of ``align_image``.
    confidence: face confidence in [0, 1] from the face classifier on the crop (``model.confidence``; independent of
        the detector): the track's running value for videos, the crop's score for images; None when unknown.
    ext: (N_EXT,) float32 the extended expression (``model.expression_ext``, version ``EXT_VERSION``, names
        ``EXT_NAMES``: eye_close_r, eye_close_l, mouth_corner_up_r/l, mouth_corner_out_r/l, jaw_open; sides are the
        subject's own; 0 = the mean face, 1 = an eye shut), smoothed like the params for videos; None when the model
        ran without the expression stage. See ``eye_closure`` and ``expression_ext``.
    blendshape_values: (52,) float32 the ARKit blendshape coefficients in [0, 1] (``model.blendshapes``,
        ``ARKIT_NAMES`` order; by name: ``blendshapes``): against the track's learned neutral face for videos, the
        face's identity with its expression at 0 for images; None when not computed.
    frame, time: the frame's index and source time (s) for videos; None for images of ``align_image``.

    The tracker's bookkeeping (None or empty outside a tracker):
    is_confirmed: at this frame the track had ``min_hits`` hits and its confidence had reached
        ``confirm_confidence`` (sinks and the API get faces of confirmed tracks only, but a file's look-ahead also
        gives a confirmed track's first frames, where this is still False); age: frames since the track's first frame (1 on it); hits: its valid
        alignments; reset_groups: the filter groups reset at this frame (birth, cut, fast turn);
        raw_params (62,), raw_landmarks (68, 3), raw_confidence, raw_ext (N_EXT,): the aligner's values of this
        frame, before smoothing.
    """

    box: np.ndarray
    landmarks: np.ndarray
    pose: np.ndarray
    params: np.ndarray
    roi: np.ndarray
    vertices: np.ndarray | None = None
    score: float | None = None
    track_id: int | None = None
    confidence: float | None = None
    ext: np.ndarray | None = None
    blendshape_values: np.ndarray | None = None
    frame: int | None = None
    time: float | None = None
    is_confirmed: bool | None = None
    age: int | None = None
    hits: int | None = None
    reset_groups: tuple[str, ...] = ()
    raw_params: np.ndarray | None = None
    raw_landmarks: np.ndarray | None = None
    raw_confidence: float | None = None
    raw_ext: np.ndarray | None = None

    @property
    def blendshapes(self) -> dict[str, float] | None:
        """The ARKit blendshapes by name (``{"eyeBlinkLeft": 0.0, ..., "jawOpen": 0.4, ..., "tongueOut": 0.0}``, all
        52 in Apple's order; sides are the subject's own; names outside ``model.blendshapes.ESTIMATED`` are 0), None
        when not computed."""
        if self.blendshape_values is None:
            return None
        from model.blendshapes import as_dict

        return as_dict(self.blendshape_values)

    @property
    def yaw(self) -> float:
        """Degrees (``pose[0]``; 3DDFA's matrix2angle convention, ``model.morphable.matrix_to_angles``)."""
        return float(self.pose[0])

    @property
    def pitch(self) -> float:
        """Degrees."""
        return float(self.pose[1])

    @property
    def roll(self) -> float:
        """Degrees."""
        return float(self.pose[2])

    @property
    def camera(self) -> np.ndarray:
        """(3, 4) float32 camera matrix [s R | t] of the 3DMM (crop coordinates)."""
        return self.params[:12].reshape(3, 4)

    @property
    def shape(self) -> np.ndarray:
        """(40,) float32 identity (shape) coefficients."""
        return self.params[12:52]

    @property
    def expression(self) -> np.ndarray:
        """(10,) float32 expression coefficients."""
        return self.params[52:62]

    @property
    def expression_ext(self) -> dict[str, float] | None:
        """The extended expression by name (``{"eye_close_r": 0.02, ..., "jaw_open": 0.1}``), None without it."""
        if self.ext is None:
            return None
        from model.expression_ext import EXT_NAMES

        return {k: float(v) for k, v in zip(EXT_NAMES, np.ravel(self.ext))}

    @property
    def eye_closure(self) -> tuple[float, float] | None:
        """(right, left) eye closure of the subject (0 open as the mean face, 1 shut, < 0 wider), None without
        ``ext``. "right" is the subject's right eye (landmarks 36-41: image left for a frontal face)."""
        if self.ext is None:
            return None
        e = np.ravel(self.ext)
        return float(e[0]), float(e[1])
