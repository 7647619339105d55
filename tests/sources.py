"""Test helpers: tiny sources in each form `stnet prepare` (and `stnet data check`) reads, made of real
encoded files: UCF101 split lists, Kinetics CSVs, HMDB51 split files, SSv2 JSON files, frame folders.

Each writer returns where it wrote; the constants say what is in it, so tests can assert exact numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from videos import barcode_frame, write_video

# --- UCF101 --------------------------------------------------------------------------------------------

UCF_CLASSES = ["ApplyEyeMakeup", "HandstandPushups", "YoYo"]  # classInd order; files say HandStandPushups


def ucf_file_class(name: str) -> str:
    return "HandStandPushups" if name == "HandstandPushups" else name


def ucf_frames(cls: int, group: int) -> int:
    return 20 + 3 * cls + group  # 21..30: every video a different length


def write_ucf101(root: Path) -> Path:
    """root/UCF-101/<Class>/v_<Class>_gXX_c01.avi (MPEG-4 part 2) for groups 1-4 (YoYo g04 is zero bytes),
    plus UCF-101/ucfTrainTestlist/ for split 1: train g03-g04 and a listed YoYo g05 that is not on disk,
    test g01-g02. Returns the UCF-101 folder."""
    source = root / "UCF-101"
    for c, name in enumerate(UCF_CLASSES):
        for g in range(1, 5):
            write_video(
                source / name / f"v_{ucf_file_class(name)}_g{g:02d}_c01.avi", ucf_frames(c, g), codec="mpeg4"
            )
    # a zero-byte video in the train split
    (source / "YoYo" / "v_YoYo_g04_c01.avi").write_bytes(b"")
    ann = source / "ucfTrainTestlist"
    ann.mkdir()
    (ann / "classInd.txt").write_text("".join(f"{i + 1} {n}\n" for i, n in enumerate(UCF_CLASSES)))
    train = [
        f"{ucf_file_class(n)}/v_{ucf_file_class(n)}_g{g:02d}_c01.avi {c + 1}"
        for c, n in enumerate(UCF_CLASSES)
        for g in (3, 4)
    ]
    train.append("YoYo/v_YoYo_g05_c01.avi 3")  # listed, not on disk
    test = [
        f"{ucf_file_class(n)}/v_{ucf_file_class(n)}_g{g:02d}_c01.avi" for n in UCF_CLASSES for g in (1, 2)
    ]
    (ann / "trainlist01.txt").write_text("\r\n".join(train) + "\r\n")  # the official files use CRLF
    (ann / "testlist01.txt").write_text("\r\n".join(test) + "\r\n")
    return source


# --- Kinetics ------------------------------------------------------------------------------------------


def write_kinetics(root: Path) -> tuple[Path, list[Path]]:
    """root/kinetics/: 5 H.264 videos (in class folders, flat, under val/), and root/train.csv, val.csv:
    3 train rows found + 1 missing, 1 val row found + 1 missing, 1 labelled test row. Returns the video
    folder and the CSVs."""
    source = root / "kinetics"
    write_video(source / "air drumming" / "aaaaaaaaaaa_000010_000020.mp4", 24)
    write_video(source / "abseiling" / "bbbbbbbbbbb_000000_000010.mp4", 30)
    write_video(source / "ccccccccccc_000005_000015.mp4", 26)  # flat layout
    write_video(source / "val" / "ddddddddddd_000001_000011.mp4", 22)
    write_video(source / "eeeeeeeeeee_000000_000010.mp4", 21)  # a test row with a label
    header = "label,youtube_id,time_start,time_end,split,is_cc\n"
    (root / "train.csv").write_text(
        header + "air drumming,aaaaaaaaaaa,10,20,train,0\n"
        "abseiling,bbbbbbbbbbb,0,10,train,0\n"
        '"zumba",ccccccccccc,5,15,train,0\n'
        "zumba,missingvid01,3,13,train,0\n"
    )
    (root / "val.csv").write_text(
        header + "abseiling,ddddddddddd,1,11,val,0\n"
        "zumba,missingvid02,0,10,val,0\n"
        "zumba,eeeeeeeeeee,0,10,test,0\n"
    )
    return source, [root / "train.csv", root / "val.csv"]


# --- HMDB51 --------------------------------------------------------------------------------------------

HMDB_CLASSES = ["brush_hair", "climb_stairs", "sword"]  # sorted, as the official folders spell them
# official-style names: '#', '&', '(' and '!' all occur in HMDB51's file names
HMDB_VIDEOS = {
    "brush_hair": ["#20_Rhythm_brush_hair_u_nm_np1_fr_goo_0.avi", "April_09_brush_hair_u_nm_np1_ba_goo_1.avi",
                   "Brushing_Hair_(Part_2)!_brush_hair_h_cm_np1_le_med_2.avi"],
    "climb_stairs": ["Veoh_Alpha_Dog_(Bristol_&_Hodges)_climb_stairs_f_cm_np1_le_med_0.avi",
                     "climb_1_climb_stairs_f_nm_np1_ba_bad_1.avi",
                     "climb_2_climb_stairs_f_nm_np1_ba_bad_2.avi"],
    "sword": ["sword_a_sword_f_cm_np1_ri_med_0.avi", "sword_b_sword_f_cm_np1_ri_med_1.avi",
              "sword_c_sword_f_cm_np1_ri_med_2.avi"],
}  # fmt: skip
CODES = {1: ["1", "2", "0"], 2: ["2", "1", "1"]}  # split -> code of each class's videos 0, 1, 2


def write_hmdb51(root: Path) -> Path:
    """root/hmdb51/<class>/<name>.avi (MPEG-4 AVI, as the official release; sword_b is not there) and
    root/splits/ for splits 1 and 2 (:data:`CODES`). Returns root."""
    for c, name in enumerate(HMDB_CLASSES):
        for i, video in enumerate(HMDB_VIDEOS[name]):
            if (c, i) != (2, 1):  # sword_b is listed but not on disk
                write_video(root / "hmdb51" / name / video, 10 + 3 * c + i, codec="mpeg4")
    for split, codes in CODES.items():
        for name in HMDB_CLASSES:
            lines = [f"{video} {code} \n" for video, code in zip(HMDB_VIDEOS[name], codes, strict=True)]
            (root / "splits").mkdir(exist_ok=True)
            (root / "splits" / f"{name}_test_split{split}.txt").write_text("".join(lines))
    return root


# --- Something-Something V2 ---------------------------------------------------------------------------

SSV2_LABELS = {  # the official file's quirks: apostrophes, commas, quotes; here also non-ASCII text
    "Pushing something from left to right": "0",
    "Pushing something from right to left": "1",
    "Putting something that can't roll onto a slanted surface, so it slides down": "2",
    'Showing "something" to the café camera': "3",
}
SSV2_TRAIN = [
    {
        "id": "101",
        "label": "pushing a pen from left to right",
        "template": "Pushing [something] from left to right",
        "placeholders": ["a pen"],
    },
    {
        "id": 102,
        "label": 'pushing "the" box from right to left',
        "template": "Pushing [something] from right to left",
        "placeholders": ['"the" box'],
    },
    {
        "id": "103",
        "label": "putting a cube that can't roll onto a book, so it slides down",
        "template": "Putting [something that can't roll] onto [a slanted surface], so it slides down",
        "placeholders": ["a cube", "a book"],
    },
    {
        "id": "104",
        "label": "pushing a mug from left to right",
        "template": "Pushing [something] from left to right",
        "placeholders": ["a mug"],
    },  # no video
    {"id": "105", "label": "waving", "template": "Waving [something] around"},  # not a class
]
SSV2_VAL = [
    {"id": "201", "label": "showing \"crème brûlée\" to the café camera",
     "template": 'Showing ["something"] to the café camera', "placeholders": ["crème brûlée"]},
]  # fmt: skip


def write_ssv2(root: Path) -> Path:
    """root/videos/<id>.webm encoded as VP9 (SSv2's codec; 104 is not there) and the three JSON files
    (labels with a BOM). Returns root."""
    for i, video in enumerate(["101", "102", "103", "105", "201"]):
        write_video(root / "videos" / f"{video}.webm", 8 + i, codec="libvpx-vp9")
    (root / "labels.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(SSV2_LABELS, ensure_ascii=False).encode())
    (root / "train.json").write_text(json.dumps(SSV2_TRAIN))
    (root / "validation.json").write_text(json.dumps(SSV2_VAL, ensure_ascii=False), encoding="utf-8")
    return root


# --- Frame folders (MMAction2 rawframes) ---------------------------------------------------------------


def write_frame_folder(
    folder: Path, n: int, template: str = "img_{:05}.jpg", size: tuple[int, int] = (48, 64)
) -> Path:
    """``n`` JPEG bar-code frames (height, width: ``size``) named ``template`` from 1 on; returns folder."""
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(barcode_frame(i, *size)).save(folder / template.format(i + 1), quality=95)
    return folder
