using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Unicode;

namespace FineAlign.Data;

/// <summary>One non-blank JSONL line: its 1-based line number and its object.</summary>
public readonly record struct JsonlLine(long LineNumber, JsonObject Object);

/// <summary>
/// Streams a JSONL file line by line (only one line is in memory). Blank lines are skipped; each other
/// line must be a UTF-8 JSON object. Errors are <see cref="DataFormatException"/>s naming file and line.
/// </summary>
public static class JsonlReader
{
    public static IEnumerable<JsonlLine> Read(string path)
    {
        if (!File.Exists(path)) throw new FineAlignException($"{path}: file not found");
        return ReadLines(path);
    }

    /// <summary>
    /// Duplicate keys are an error: which value wins is ambiguous, and JsonObject would otherwise throw an
    /// ArgumentException on first access instead of a message naming the line.
    /// </summary>

    private static IEnumerable<JsonlLine> ReadLines(string path)
    {
        foreach (var (lineNo, bytes) in ReadByteLines(path))
        {
            ReadOnlySpan<byte> line = bytes.Span;
            if (lineNo == 1 && line.StartsWith("\uFEFF"u8)) line = line[3..];
            if (line.Length > 0 && line[^1] == (byte)'\r') line = line[..^1];
            if (line.Trim(" \t"u8).Length == 0) continue;
            if (!Utf8.IsValid(line))
                throw new DataFormatException(path, lineNo, null, $"invalid UTF-8 at byte {InvalidUtf8Offset(line)} of the line");
            JsonNode? node;
            try { node = JsonNode.Parse(line, documentOptions: StrictJson.Options); }
            catch (JsonException e) { throw new DataFormatException(path, lineNo, null, "invalid JSON: " + OneLine(e.Message)); }
            if (node is not JsonObject obj)
                throw new DataFormatException(path, lineNo, null, $"expected a JSON object, got {Kind(node)}");
            yield return new JsonlLine(lineNo, obj);
        }
    }

    // Splits the file on '\n' reading 64 KB at a time; each line's bytes are copied out once.
    private static IEnumerable<(long, ReadOnlyMemory<byte>)> ReadByteLines(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        var buffer = new byte[1 << 16];
        var line = new MemoryStream();
        long lineNo = 0;
        int n;
        while ((n = stream.Read(buffer, 0, buffer.Length)) > 0)
        {
            int start = 0;
            for (int i = 0; i < n; i++)
            {
                if (buffer[i] != (byte)'\n') continue;
                line.Write(buffer, start, i - start);
                start = i + 1;
                yield return (++lineNo, line.ToArray());
                line.SetLength(0);
            }
            line.Write(buffer, start, n - start);
        }
        if (line.Length > 0) yield return (++lineNo, line.ToArray());
    }

    // 1-based position of the first byte that is not valid UTF-8.
    private static int InvalidUtf8Offset(ReadOnlySpan<byte> line)
    {
        var chars = new char[line.Length];
        Utf8.ToUtf16(line, chars, out int read, out _, replaceInvalidSequences: false);
        return read + 1;
    }

    private static string OneLine(string s) => s.Replace('\r', ' ').Replace('\n', ' ');

    /// <summary>A JSON kind for error messages: string, number, boolean, array, object, null.</summary>
    public static string Kind(JsonNode? node) => node switch
    {
        null => "null",
        JsonObject => "object",
        JsonArray => "array",
        JsonValue v => v.GetValueKind() switch
        {
            JsonValueKind.String => "string",
            JsonValueKind.Number => "number",
            JsonValueKind.True or JsonValueKind.False => "boolean",
            _ => "null",
        },
        _ => "unknown",
    };

    // ---------------------------------------------------------------- typed field access

    public static string RequireString(this JsonlLine l, string file, string field) =>
        l.Object[field] is JsonValue v && v.GetValueKind() == JsonValueKind.String
            ? v.GetValue<string>()
            : throw Wrong(l, file, field, "a string");

    public static bool RequireBool(this JsonlLine l, string file, string field) =>
        l.Object[field] is JsonValue v && v.GetValueKind() is JsonValueKind.True or JsonValueKind.False
            ? v.GetValue<bool>()
            : throw Wrong(l, file, field, "a boolean");

    /// <summary>A finite number (rewards, labels, scores): 1e999 does not fit a double and is refused, not Infinity.</summary>
    public static double RequireNumber(this JsonlLine l, string file, string field)
    {
        if (l.Object[field] is not JsonValue v || v.GetValueKind() != JsonValueKind.Number) throw Wrong(l, file, field, "a number");
        // GetValue<double> throws FormatException for 1e999; TryGetValue fails instead.
        if (!v.TryGetValue(out double d) || !double.IsFinite(d))
            throw new DataFormatException(file, l.LineNumber, field, $"expected a finite number, got {v.ToJsonString()}");
        return d;
    }

    public static int[] RequireIntArray(this JsonlLine l, string file, string field)
    {
        if (l.Object[field] is not JsonArray arr) throw Wrong(l, file, field, "an array of integers");
        var result = new int[arr.Count];
        for (int i = 0; i < arr.Count; i++)
        {
            if (arr[i] is JsonValue v && v.GetValueKind() == JsonValueKind.Number && v.TryGetValue(out int x)) result[i] = x;
            else if (arr[i] is JsonValue d && d.GetValueKind() == JsonValueKind.Number && d.TryGetValue(out double dx)
                     && dx == Math.Floor(dx) && dx >= int.MinValue && dx <= int.MaxValue) result[i] = (int)dx;
            else throw new DataFormatException(file, l.LineNumber, field, $"element {i}: expected an integer, got {Describe(arr[i])}");
        }
        return result;
    }

    /// <summary>Error for a field that is missing or has the wrong type.</summary>
    public static DataFormatException Wrong(JsonlLine l, string file, string field, string expected) =>
        new(file, l.LineNumber, field, l.Object.ContainsKey(field)
            ? $"expected {expected}, got {Describe(l.Object[field])}"
            : $"missing (expected {expected})");

    private static string Describe(JsonNode? node) =>
        node is JsonValue v && v.GetValueKind() == JsonValueKind.Number ? $"number {v.ToJsonString()}" : Kind(node);
}
