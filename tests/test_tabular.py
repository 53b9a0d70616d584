"""Tabular datasets: formats read as pandas would, column types, transforms, registration."""

import json
import sys

import pytest
from click.testing import CliRunner
from helpers import lazy_import, one_error_line

from mlws import Dataset, DataType, TabularDataset
from mlws.cli import cli
from mlws.errors import ExtraNotInstalled, UserErrorException
from mlws.tabular import PromoteHeadersBehavior

pd = lazy_import("pandas")  # on first use: not in every xdist worker's collection (~0.6 s)

CSV = """\
id,score,name,ok,when,note
1,1.5,ann,True,2024-01-02,x
2,,bob,False,2024-01-03 04:05:06,NA
3,3.25,"c,d",true,2024-02-01,
4,-7,NA,FALSE,2024-02-02,None
"""


def count(ws):
    return ws.catalog.scalar("SELECT count(*) FROM datasets")


def datastore_files(store):
    return sorted(
        p.relative_to(store.root).as_posix() for p in store.root.rglob("*") if p.is_file()
    )


@pytest.fixture
def store(ws, tmp_path):
    src = tmp_path / "src"
    (src / "more").mkdir(parents=True)
    (src / "a.csv").write_text(CSV)
    (src / "more" / "b.csv").write_text("id,score,name,ok,when,note\n5,0.5,eve,True,2024-03-01,y\n")
    d = ws.get_default_datastore()
    d.upload(src, "people", show_progress=False)
    return d


def test_csv_reads_as_pandas_does(ws, store):
    ds = Dataset.Tabular.from_delimited_files((store, "people/**/*.csv"))
    assert isinstance(ds, TabularDataset)
    df = ds.to_pandas_dataframe()
    a, b = (store.root / "people" / "a.csv", store.root / "people" / "more" / "b.csv")
    expected = pd.concat([pd.read_csv(a), pd.read_csv(b)], ignore_index=True)
    # pyarrow infers the datetimes that pandas leaves as text; the rest is pandas' frame
    when = expected.pop("when")
    assert list(df.pop("when")) == list(pd.to_datetime(when, format="ISO8601"))
    pd.testing.assert_frame_equal(df, expected)
    assert df["id"].dtype == "int64" and df["score"].dtype == "float64"
    assert df["ok"].dtype == bool and df["ok"].tolist() == [True, False, True, False, True]
    assert df["name"].isna().tolist() == [False, False, False, True, False]  # "NA" is missing
    assert df.index.equals(pd.RangeIndex(5))


def test_datetimes_are_pandas_datetimes(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("d,t\n2024-01-02,2024-01-02 03:04:05.250\n9999-12-31,2024-01-03 00:00:00.500\n")
    df = Dataset.Tabular.from_delimited_files(str(f)).to_pandas_dataframe()
    expected = pd.read_csv(f, parse_dates=["t"])
    assert df["t"].dtype == expected["t"].dtype
    pd.testing.assert_series_equal(df["t"], expected["t"])
    # 9999-12-31 is past pandas.Timestamp.max: NaT by default, or an error that says where
    assert df["d"].tolist()[0] == pd.Timestamp("2024-01-02") and pd.isna(df["d"][1])
    with pytest.raises(UserErrorException, match=r"column 'd': 9999-12-31.*row 2"):
        Dataset.Tabular.from_delimited_files(str(f)).to_pandas_dataframe(
            out_of_range_datetime="fail"
        )
    g = tmp_path / "eu.csv"
    g.write_text("day\n31/01/2024 08:30\n2024-02-01\nsoon\n")
    types = {"day": DataType.to_datetime(["%d/%m/%Y %H:%M", "%Y-%m-%d"])}
    ds = Dataset.Tabular.from_delimited_files(str(g), set_column_types=types, validate=False)
    days = ds.to_pandas_dataframe()["day"]
    assert days[0] == pd.Timestamp(2024, 1, 31, 8, 30) and days[1] == pd.Timestamp(2024, 2, 1)
    assert pd.isna(days[2])


def test_column_types(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text('code,n,x,flag,comma\n007,1,2.5,yes,"1,5"\n010, 2 ,x,no,2\n')
    types = {
        "code": DataType.to_string(),
        "n": DataType.to_long(),
        "x": DataType.to_float(),
        "flag": DataType.to_bool(["yes"], ["no"]),
        "comma": DataType.to_float(decimal_mark=","),
    }
    ds = Dataset.Tabular.from_delimited_files(str(f), set_column_types=types, validate=False)
    df = ds.to_pandas_dataframe()
    assert df["code"].tolist() == ["007", "010"]  # the text as written, not 7 and 10
    assert df["n"].dtype == "int64" and df["n"].tolist() == [1, 2]
    assert df["x"][0] == 2.5 and pd.isna(df["x"][1])  # "x" is an error value: null
    assert df["flag"].tolist() == [True, False] and df["comma"].tolist() == [1.5, 2.0]
    with pytest.raises(UserErrorException) as e:
        ds.to_pandas_dataframe(on_error="fail")
    assert "column 'x'" in str(e.value) and "'x'" in str(e.value) and "row 2" in str(e.value)
    # validate=True reads the first rows and names the value that does not convert
    with pytest.raises(UserErrorException, match=r"column 'x': cannot convert 'x' to float"):
        Dataset.Tabular.from_delimited_files(str(f), set_column_types={"x": DataType.to_float()})
    assert DataType.from_name("int") == DataType.to_long()
    assert DataType.from_dict(DataType.to_bool().as_dict()) == DataType.to_bool()
    strings = Dataset.Tabular.from_delimited_files(str(f), infer_column_types=False)
    assert strings.to_pandas_dataframe()["n"].tolist() == ["1", " 2 "]


def test_parquet_round_trip(tmp_path):
    frame = pd.DataFrame(
        {"a": [1, 2, 3], "b": ["x", None, "z"], "c": [0.5, 1.5, None], "d": [True, False, True]}
    )
    frame.index = [10, 11, 12]  # an unnamed index is not data: not a column, not the index
    frame.to_parquet(tmp_path / "f1.parquet")
    named_index = frame.assign(key=["p", "q", "r"]).set_index("key")
    named_index.to_parquet(tmp_path / "named.parquet")  # a named index is a column
    df = Dataset.Tabular.from_parquet_files(str(tmp_path / "f1.parquet")).to_pandas_dataframe()
    pd.testing.assert_frame_equal(df, frame.reset_index(drop=True))
    named = Dataset.Tabular.from_parquet_files(str(tmp_path / "named.parquet"))
    assert named.to_pandas_dataframe().to_dict("list")["key"] == ["p", "q", "r"]
    # several files: columns joined by name, missing ones null
    pd.DataFrame({"a": [4], "e": ["new"]}).to_parquet(tmp_path / "f2.parquet")
    both = Dataset.Tabular.from_parquet_files(
        [str(tmp_path / "f1.parquet"), str(tmp_path / "f2.parquet")]
    ).to_pandas_dataframe()
    assert both["a"].tolist() == [1, 2, 3, 4] and both["e"].isna().tolist() == [1, 1, 1, 0]


def test_json_lines(tmp_path):
    f = tmp_path / "e.jsonl"
    f.write_text('{"a": 1, "b": "x"}\n{"a": 2, "b": null, "c": true}\n\n{"a": 3, "b": "z"}\n')
    df = Dataset.Tabular.from_json_lines_files(str(f)).to_pandas_dataframe()
    expected = pd.read_json(f, lines=True)
    assert df[["a", "b"]].equals(expected[["a", "b"]])
    assert df["c"].tolist()[1] is True and df["a"].dtype == "int64"
    # a field can first appear in any line: names are checked when the data is read
    lazy = Dataset.Tabular.from_json_lines_files(str(f)).keep_columns(["a", "zz"])
    with pytest.raises(UserErrorException, match="keep_columns names 'zz'"):
        lazy.to_pandas_dataframe()
    typed = Dataset.Tabular.from_json_lines_files(
        str(f), set_column_types={"zz": DataType.to_long()}
    )
    with pytest.raises(UserErrorException, match="set_column_types names 'zz'"):
        typed.to_pandas_dataframe()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": 1}\nnot json\n{"a": "text"}\n')
    with pytest.raises(UserErrorException, match="line 2 of /bad.jsonl is not a JSON object"):
        Dataset.Tabular.from_json_lines_files(str(bad))
    dropped = Dataset.Tabular.from_json_lines_files(str(bad), invalid_lines="drop")
    assert dropped.to_pandas_dataframe()["a"].tolist() == ["1", "text"]  # mixed kinds: text
    latin = tmp_path / "l.jsonl"
    latin.write_bytes('{"city": "Málaga"}\n'.encode("latin-1"))
    ds = Dataset.Tabular.from_json_lines_files(str(latin), encoding="latin1")
    assert ds.to_pandas_dataframe()["city"].tolist() == ["Málaga"]


def test_transforms_are_registered_and_read_back(ws, store):
    ds = Dataset.Tabular.from_delimited_files((store, "people/**/*.csv"), include_path=True)
    t = ds.drop_columns(["note"]).skip(1).take(3).keep_columns(["Path", "id", "name"])
    assert t is not ds and ds._extra["transforms"] == []  # the original is unchanged
    df = t.to_pandas_dataframe()
    assert df.columns.tolist() == ["Path", "id", "name"] and df["id"].tolist() == [2, 3, 4]
    assert set(df["Path"]) == {"/people/a.csv"}
    reg = t.register(ws, "some-people", description="three")
    again = Dataset.get_by_name(ws, "some-people")
    assert [s["op"] for s in again.definition["transforms"]] == [
        "drop_columns",
        "skip",
        "take",
        "keep_columns",
    ]
    pd.testing.assert_frame_equal(again.to_pandas_dataframe(), df)
    assert reg.take(1).to_pandas_dataframe()["id"].tolist() == [2]
    paths = ds.to_pandas_dataframe()["Path"].tolist()
    assert paths == ["/people/a.csv"] * 4 + ["/people/more/b.csv"]


def test_random_split_partitions_the_rows(ws, tmp_path):
    f = tmp_path / "n.csv"
    f.write_text("i\n" + "\n".join(str(i) for i in range(2000)) + "\n")
    ds = Dataset.Tabular.from_delimited_files(str(f))
    train, test = ds.random_split(0.3, seed=7)
    a, b = (set(x.to_pandas_dataframe()["i"]) for x in (train, test))
    assert not a & b and a | b == set(range(2000))  # every row in exactly one
    assert 500 < len(a) < 700
    again, _ = ds.random_split(0.3, seed=7)
    assert set(again.to_pandas_dataframe()["i"]) == a  # same seed, same rows
    other, _ = ds.random_split(0.3, seed=8)
    assert set(other.to_pandas_dataframe()["i"]) != a
    reg = train.register(ws, "train")
    assert set(Dataset.get_by_name(ws, "train").to_pandas_dataframe()["i"]) == a
    assert reg.definition["transforms"][0]["seed"] == 7
    # without a seed one is drawn and recorded: the same dataset gives the same rows each read
    sample = ds.take_sample(0.1)
    rows = sample.to_pandas_dataframe()["i"].tolist()
    assert rows == sample.to_pandas_dataframe()["i"].tolist() and 100 < len(rows) < 300
    assert ds.take_sample(1).to_pandas_dataframe()["i"].tolist() == list(range(2000))


def test_headers(tmp_path):
    (tmp_path / "1.csv").write_text("a,b\n1,2\n")
    (tmp_path / "2.csv").write_text("3,4\n")
    (tmp_path / "3.csv").write_text("b,c\n5,6\n")
    one, two, three = (str(tmp_path / f"{i}.csv") for i in (1, 2, 3))
    none = Dataset.Tabular.from_delimited_files(two, header=False).to_pandas_dataframe()
    assert none.columns.tolist() == ["Column1", "Column2"] and none.iloc[0].tolist() == [3, 4]
    first = Dataset.Tabular.from_delimited_files(
        [one, two], header=PromoteHeadersBehavior.ONLY_FIRST_FILE_HAS_HEADERS
    ).to_pandas_dataframe()
    assert first.to_dict("list") == {"a": [1, 3], "b": [2, 4]}
    combined = Dataset.Tabular.from_delimited_files(
        [one, three], header=PromoteHeadersBehavior.COMBINE_ALL_FILES_HEADERS
    ).to_pandas_dataframe()
    assert combined.columns.tolist() == ["a", "b", "c"] and combined["b"].tolist() == [2, 5]
    with pytest.raises(UserErrorException, match="differs from the first file's"):
        Dataset.Tabular.from_delimited_files([one, three])
    (tmp_path / "dup.csv").write_text("x,x,\n1,2,3\n")
    dup = Dataset.Tabular.from_delimited_files(str(tmp_path / "dup.csv"))
    assert dup.to_pandas_dataframe().columns.tolist() == ["x", "x.1", "Unnamed: 2"]
    tsv = tmp_path / "t.tsv"
    tsv.write_text("a\tb\n1\t2\n")
    assert Dataset.Tabular.from_delimited_files(str(tsv), separator="\t").to_pandas_dataframe()[
        "b"
    ].tolist() == [2]


def test_delimited_options(tmp_path):
    multi = tmp_path / "m.csv"
    multi.write_text('a,b\n1,"two\nlines"\n2,x\n')
    ds = Dataset.Tabular.from_delimited_files(str(multi), support_multi_line=True)
    assert ds.to_pandas_dataframe()["b"].tolist() == ["two\nlines", "x"]
    empty = tmp_path / "e.csv"
    empty.write_text("a,b\n1,\n,y\n")
    kept = Dataset.Tabular.from_delimited_files(str(empty), empty_as_string=True)
    df = kept.to_pandas_dataframe()
    assert df["b"].tolist() == ["", "y"] and pd.isna(df["a"][1])  # numbers stay numbers
    latin = tmp_path / "l.csv"
    latin.write_bytes("city;n\nMálaga;1\n".encode("latin-1"))
    with pytest.raises(UserErrorException, match="encoding='latin1'"):
        Dataset.Tabular.from_delimited_files(str(latin), separator=";")
    ds = Dataset.Tabular.from_delimited_files(str(latin), separator=";", encoding="latin1")
    assert ds.to_pandas_dataframe().to_dict("list") == {"city": ["Málaga"], "n": [1]}
    (tmp_path / "only-header.csv").write_text("a,b\n")
    (tmp_path / "zero.csv").write_text("")
    none = Dataset.Tabular.from_delimited_files(
        [str(tmp_path / "only-header.csv"), str(tmp_path / "zero.csv")]
    ).to_pandas_dataframe()
    assert none.columns.tolist() == ["a", "b"] and len(none) == 0


def test_types_that_differ_between_files(tmp_path):
    (tmp_path / "1.csv").write_text("k,v\n1,1\n2,2\n")
    (tmp_path / "2.csv").write_text("k,v\n01,2.5\nx,3\n")
    df = Dataset.Tabular.from_delimited_files(str(tmp_path / "*.csv")).to_pandas_dataframe()
    assert df["k"].tolist() == ["1", "2", "01", "x"]  # text as written in every file
    assert df["v"].dtype == "float64" and df["v"].tolist() == [1, 2, 2.5, 3]


def test_a_folder_glob_reads_each_file_once(ws, store, tmp_path):
    """``folder/**`` matches the folder, its sub-folders and its files: each file is read once
    (it came back once per match reaching it), locally and on a datastore."""
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "x.csv").write_text("a\n1\n")
    (tmp_path / "d" / "sub" / "y.csv").write_text("a\n2\n")
    local = Dataset.Tabular.from_delimited_files(str(tmp_path / "d" / "**"))
    assert sorted(local.to_pandas_dataframe()["a"]) == [1, 2]
    on_store = Dataset.Tabular.from_delimited_files((store, "people/**"))
    assert sorted(on_store.to_pandas_dataframe()["id"]) == [1, 2, 3, 4, 5]
    files = Dataset.File.from_files(str(tmp_path / "d" / "**"))
    assert sorted(files.to_path()) == ["/d/sub/y.csv", "/d/x.csv"]


def test_take_reads_only_the_rows_it_needs(tmp_path):
    (tmp_path / "1.csv").write_text("a\n" + "\n".join(map(str, range(10))) + "\n")
    (tmp_path / "2.csv").write_bytes(b"a\n\xff\xfe broken \x00\n")
    ds = Dataset.Tabular.from_delimited_files(str(tmp_path / "*.csv"), validate=False)
    assert ds.take(3).to_pandas_dataframe()["a"].tolist() == [0, 1, 2]  # 2.csv never opened
    assert ds.skip(2).take(3).to_pandas_dataframe()["a"].tolist() == [2, 3, 4]
    with pytest.raises(UserErrorException, match=r"cannot read /2.csv.*encoding"):
        ds.to_pandas_dataframe()


def test_register_pandas_dataframe_versions(ws):
    store = ws.get_default_datastore()
    first = pd.DataFrame({"x": [1, 2], "y": ["a", "b"]})
    v1 = Dataset.Tabular.register_pandas_dataframe(first, (store, "frames"), "frame", tags={"k": 1})
    second = pd.DataFrame({"x": [3]}, index=pd.Index(["r"], name="key"))
    v2 = Dataset.Tabular.register_pandas_dataframe(second, store.path("frames"), "frame")
    assert (v1.version, v2.version, v1.tags) == (1, 2, {"k": "1"})
    files = datastore_files(store)
    assert len(files) == 2 and all(
        f.startswith("frames/") and f.endswith("/data.parquet") for f in files
    )
    pd.testing.assert_frame_equal(Dataset.get_by_name(ws, "frame", 1).to_pandas_dataframe(), first)
    assert Dataset.get_by_name(ws, "frame").to_pandas_dataframe().to_dict("list") == {
        "key": ["r"],
        "x": [3],
    }
    assert not v1.has_changed()


def test_fingerprint_and_has_changed(ws, store):
    reg = Dataset.Tabular.from_delimited_files((store, "people/*.csv")).register(ws, "people")
    assert not reg.has_changed() and reg.serialize()["files"] == 1
    with (store.root / "people" / "a.csv").open("a") as f:
        f.write("6,1,fay,True,2024-04-01,z\n")
    assert reg.changes().modified == ["people/a.csv"]
    assert len(reg.to_pandas_dataframe()) == 5  # the definition reads the data as it is now
    v2 = reg.register(ws, "people", create_new_version=True)
    assert v2.version == 2 and not v2.has_changed()


def test_bad_input_changes_nothing(ws, store, tmp_path):
    before, files = count(ws), datastore_files(store)
    csv = (store, "people/a.csv")
    ds = Dataset.Tabular.from_delimited_files(csv)
    bad_calls = [
        lambda: ds.keep_columns(["id", "nope"]),
        lambda: ds.drop_columns("nope"),
        lambda: ds.keep_columns([]),
        lambda: Dataset.Tabular.from_delimited_files(
            csv, set_column_types={"nope": DataType.to_long()}
        ),
        lambda: Dataset.Tabular.from_delimited_files(
            csv, set_column_types={"name": DataType.to_long()}
        ),
        lambda: Dataset.Tabular.from_delimited_files(csv, set_column_types={"id": "long"}),
        lambda: Dataset.Tabular.from_delimited_files((store, "people/*.tsv")),
        lambda: Dataset.Tabular.from_delimited_files(csv, separator=1),
        lambda: Dataset.Tabular.from_delimited_files(csv, separator=";;"),
        lambda: Dataset.Tabular.from_delimited_files(csv, header="yes"),
        lambda: Dataset.Tabular.from_delimited_files(csv, encoding="klingon"),
        lambda: Dataset.Tabular.from_delimited_files(csv, partition_format="{x}/a.csv"),
        lambda: Dataset.Tabular.from_json_lines_files(csv, invalid_lines="skip"),
        lambda: ds.take("3"),
        lambda: ds.take(-1),
        lambda: ds.skip(1.5),
        lambda: ds.take(True),
        lambda: ds.take_sample(0),
        lambda: ds.take_sample(1.5),
        lambda: ds.take_sample(0.5, seed="x"),
        lambda: ds.random_split(1),
        lambda: ds.random_split(0),
        lambda: ds.random_split("half"),
        lambda: ds.to_pandas_dataframe(on_error="ignore"),
        lambda: DataType.to_bool(mismatch_as="maybe"),
        lambda: DataType.from_name("complex"),
        # nothing is recorded for a definition that names a missing column, validated or not
        lambda: Dataset.Tabular.from_delimited_files(
            csv, validate=False, set_column_types={"nope": DataType.to_long()}
        ).register(ws, "bad"),
        lambda: Dataset.Tabular.from_delimited_files(csv).register(ws, "bad name"),
        lambda: Dataset.Tabular.register_pandas_dataframe(
            pd.DataFrame({"a": [1]}), (store, "f"), "bad name"
        ),
        lambda: Dataset.Tabular.register_pandas_dataframe(pd.DataFrame({"a": [1]}), "f", "ok"),
        lambda: Dataset.Tabular.register_pandas_dataframe(
            pd.DataFrame({"a": [1]}), (store, "../x"), "ok"
        ),
        lambda: Dataset.Tabular.register_pandas_dataframe([1, 2], (store, "f"), "ok"),
        lambda: Dataset.Tabular.register_pandas_dataframe(
            pd.DataFrame({"a": [object()]}), (store, "f"), "ok"
        ),
    ]
    for call in bad_calls:
        with pytest.raises(UserErrorException) as e:
            call()
        assert "\n" not in str(e.value)
    assert count(ws) == before and datastore_files(store) == files
    # register_pandas_dataframe makes the next version of a taken name (as v1); register refuses
    Dataset.Tabular.register_pandas_dataframe(pd.DataFrame({"a": [1]}), (store, "f"), "taken")
    with pytest.raises(UserErrorException, match="create_new_version"):
        Dataset.Tabular.from_delimited_files(csv).register(ws, "taken")
    assert count(ws) == before + 1


def test_register_pandas_dataframe_leaves_nothing_when_registering_fails(ws, monkeypatch):
    store = ws.get_default_datastore()
    monkeypatch.setattr(TabularDataset, "register", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        Dataset.Tabular.register_pandas_dataframe(pd.DataFrame({"a": [1]}), (store, "new/dir"), "x")
    assert datastore_files(store) == [] and not (store.root / "new").exists()


def test_without_the_extra(ws, tmp_path, monkeypatch):
    f = tmp_path / "a.csv"
    f.write_text("a\n1\n")
    ds = Dataset.Tabular.from_delimited_files(str(f))
    ds.register(ws, "a")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # `import pyarrow` raises ImportError
    for call in (
        ds.to_pandas_dataframe,
        lambda: Dataset.Tabular.from_delimited_files(str(f)),
        lambda: ds.keep_columns("a"),
    ):
        with pytest.raises(ExtraNotInstalled, match=r"pip install 'mlws\[tabular\]'"):
            call()
    line = one_error_line(CliRunner().invoke(cli, ["dataset", "head", "a"], catch_exceptions=False))
    assert "mlws[tabular]" in line


def test_cli(ws, store):
    def invoke(*args):
        return CliRunner().invoke(cli, list(args), catch_exceptions=False)

    r = invoke(
        "dataset", "register", "people", "people/**/*.csv", "--datastore", "workspaceblobstore",
        "--tabular", "--column-type", "score=float", "--include-path",
    )  # fmt: skip
    assert r.exit_code == 0 and "tabular dataset people version 1 (2 files, delimited)" in r.output
    r = invoke("dataset", "head", "people", "-n", "2")
    lines = r.output.splitlines()
    assert r.exit_code == 0 and lines[0].split()[:3] == ["Path", "id", "score"]
    assert len(lines) == 4 and "ann" in lines[2] and "bob" in lines[3]
    rows = json.loads(invoke("dataset", "head", "people:1", "-n", "3", "--json").output)
    assert [r["id"] for r in rows] == [1, 2, 3] and rows[1]["score"] is None
    assert rows[0]["when"].startswith("2024-01-02T00:00:00")
    shown = invoke("dataset", "show", "people").output
    assert "format: delimited (separator=','" in shown and "column types: score=float" in shown
    data = json.loads(invoke("dataset", "show", "people", "--json").output)
    assert data["definition"]["format"] == "delimited" and data["files"] == 2
    listed = invoke("dataset", "list").output
    assert "tabular" in listed
    Dataset.get_by_name(ws, "people").skip(1).take(2).register(ws, "two")
    shown = invoke("dataset", "show", "two").output
    assert "transforms: skip(count=1) -> take(count=2)" in shown
    tsv = store.root / "people" / "t.tsv"
    tsv.write_text("0\t1\n1\t2\n")
    r = invoke("dataset", "register", "tsv", str(tsv), "--separator", "\\t", "--no-header")
    assert r.exit_code == 0, r.output
    assert json.loads(invoke("dataset", "head", "tsv", "--json").output)[1] == {
        "Column1": 1,
        "Column2": 2,
    }
    before = count(ws)
    tab = ("--separator", "tab", "--no-header")
    line = one_error_line(
        invoke("dataset", "register", "x", str(tsv), *tab, "--column-type", "Column2=bool")
    )
    assert "column 'Column2': cannot convert '2' to bool" in line
    one_error_line(invoke("dataset", "register", "x", str(tsv), *tab, "--column-type", "zz=long"))
    one_error_line(invoke("dataset", "register", "x", str(tsv), "--column-type", "a=complex"))
    one_error_line(invoke("dataset", "register", "x", "nope*.csv", "--tabular"))
    one_error_line(
        invoke("dataset", "register", "x", str(tsv), "--format", "parquet", "--no-header")
    )
    one_error_line(invoke("dataset", "head", "people", "-n", "-1"))
    invoke("dataset", "register", "files", "people", "--datastore", "workspaceblobstore")
    assert "file dataset" in one_error_line(invoke("dataset", "head", "files"))
    assert count(ws) == before + 1
