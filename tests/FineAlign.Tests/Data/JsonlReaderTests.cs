using System.Text;
using FineAlign.Data;
using FineAlign.Tests.Support;

namespace FineAlign.Tests.Data;

public class JsonlReaderTests
{
    private static string Write(TempDir dir, string content, string name = "d.jsonl")
    {
        string p = Path.Combine(dir.Path, name);
        File.WriteAllText(p, content, new UTF8Encoding(false));
        return p;
    }

    [Fact]
    public void Read_SkipsBlankLines_KeepsLineNumbers_HandlesCrlfAndBom()
    {
        using var dir = TestPaths.NewTempDir();
        string p = Path.Combine(dir.Path, "d.jsonl");
        File.WriteAllBytes(p, [.. "\uFEFF"u8, .. "{\"a\": 1}\r\n\r\n  \n{\"a\": 2}\n{\"a\": 3}"u8]);
        var lines = JsonlReader.Read(p).ToList();
        Assert.Equal([1L, 4L, 5L], lines.Select(l => l.LineNumber));
        Assert.Equal([1, 2, 3], lines.Select(l => l.Object["a"]!.GetValue<int>()));
    }

    [Fact]
    public void Read_LongLinesAcrossBufferBoundaries()
    {
        using var dir = TestPaths.NewTempDir();
        string big = new('x', 150_000);
        string p = Write(dir, $"{{\"t\": \"{big}\"}}\n{{\"t\": \"é\"}}\n");
        var lines = JsonlReader.Read(p).ToList();
        Assert.Equal(big, lines[0].RequireString(p, "t"));
        Assert.Equal("é", lines[1].RequireString(p, "t"));
    }

    [Fact]
    public void MalformedJson_NamesFileAndLine()
    {
        using var dir = TestPaths.NewTempDir();
        string p = Write(dir, "{\"a\": 1}\n\n{\"a\": \n{\"a\": 2}\n");
        var e = Assert.Throws<DataFormatException>(() => JsonlReader.Read(p).ToList());
        Assert.Equal(3, e.Line);
        Assert.StartsWith($"{p}:3: invalid JSON:", e.Message);
        Assert.DoesNotContain("\n", e.Message);
    }

    [Fact]
    public void NonObjectLine_IsAnError()
    {
        using var dir = TestPaths.NewTempDir();
        string p = Write(dir, "[1, 2]\n");
        var e = Assert.Throws<DataFormatException>(() => JsonlReader.Read(p).ToList());
        Assert.Contains("expected a JSON object, got array", e.Message);
    }

    [Fact]
    public void InvalidUtf8_NamesTheLine()
    {
        using var dir = TestPaths.NewTempDir();
        string p = Path.Combine(dir.Path, "d.jsonl");
        File.WriteAllBytes(p, [.. "{\"a\": \"ok\"}\n{\"a\": \"b"u8, 0xFF, .. "\"}\n"u8]);
        var e = Assert.Throws<DataFormatException>(() => JsonlReader.Read(p).ToList());
        Assert.Equal(2, e.Line);
        Assert.Contains("invalid UTF-8 at byte 9", e.Message);
    }

    [Fact]
    public void MissingFile_IsFineAlignException()
    {
        var e = Assert.Throws<FineAlignException>(() => JsonlReader.Read("/nonexistent/x.jsonl"));
        Assert.Contains("/nonexistent/x.jsonl", e.Message);
    }

    [Fact]
    public void TypedFields_ReturnValuesOrNameFieldAndTypes()
    {
        using var dir = TestPaths.NewTempDir();
        string p = Write(dir, """{"s": "x", "b": true, "n": 2.5, "ids": [1, 2, 3.0], "bad": [1, "a"], "f": [1.5]}""" + "\n");
        var line = JsonlReader.Read(p).Single();
        Assert.Equal("x", line.RequireString(p, "s"));
        Assert.True(line.RequireBool(p, "b"));
        Assert.Equal(2.5, line.RequireNumber(p, "n"));
        Assert.Equal([1, 2, 3], line.RequireIntArray(p, "ids"));

        var e = Assert.Throws<DataFormatException>(() => line.RequireString(p, "n"));
        Assert.Equal($"{p}:1: field 'n': expected a string, got number 2.5", e.Message);
        e = Assert.Throws<DataFormatException>(() => line.RequireBool(p, "s"));
        Assert.Equal($"{p}:1: field 's': expected a boolean, got string", e.Message);
        e = Assert.Throws<DataFormatException>(() => line.RequireNumber(p, "missing"));
        Assert.Equal($"{p}:1: field 'missing': missing (expected a number)", e.Message);
        e = Assert.Throws<DataFormatException>(() => line.RequireIntArray(p, "bad"));
        Assert.Contains("field 'bad': element 1: expected an integer, got string", e.Message);
        e = Assert.Throws<DataFormatException>(() => line.RequireIntArray(p, "f"));
        Assert.Contains("element 0: expected an integer, got number 1.5", e.Message);
        e = Assert.Throws<DataFormatException>(() => line.RequireIntArray(p, "s"));
        Assert.Contains("expected an array of integers, got string", e.Message);
    }

    [Fact]
    public void Reads_SharedHhRlhfLines()
    {
        string p = TestPaths.RequireShared("data/hh-rlhf-harmless/harmless-base-2000.jsonl");
        var first = JsonlReader.Read(p).Take(3).ToList();
        Assert.Equal([1L, 2L, 3L], first.Select(l => l.LineNumber));
        foreach (var l in first)
        {
            Assert.Contains("\n\nAssistant:", l.RequireString(p, "chosen"));
            Assert.Contains("\n\nHuman:", l.RequireString(p, "rejected"));
        }
    }
}
