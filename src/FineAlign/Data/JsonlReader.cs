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
    /// <summary>Environment variable overriding <see cref="MaxLineBytes"/> (bytes; the CLI's --max-line-bytes sets it too).</summary>
    public const string MaxLineBytesVariable = "FINEALIGN_MAX_LINE_BYTES";

    /// <summary>
    /// Default longest line: 64 MiB. A 128k-token conversation is about 0.5 MB of text, so a real example is far below it,
    /// while a line that is a whole dump (or a file with no newline) stops with a clear error before it takes gigabytes:
    /// holding a line costs about 4× its length (the bytes, the parsed document, the UTF-16 strings).
    /// </summary>
    public const long DefaultMaxLineBytes = 64L << 20;

    // Per invocation (async flow), so in-process callers such as tests and the demo do not leak a limit into each other.
    private static readonly AsyncLocal<long?> Override = new();

    /// <summary>
    /// Longest accepted line in bytes: <see cref="MaxLineBytesOverride"/> if set (the CLI's --max-line-bytes), else
    /// <see cref="MaxLineBytesVariable"/>, else <see cref="DefaultMaxLineBytes"/>.
    /// </summary>
    public static long MaxLineBytes => Override.Value ?? FromEnvironment();

    /// <summary>Sets the limit for the current async flow (null: back to the environment/default).</summary>
    public static long? MaxLineBytesOverride
    {
        get => Override.Value;
        set => Override.Value = value is null or >= 1 ? value
            : throw new FineAlignException($"--max-line-bytes {value}: must be at least 1 byte");
    }

    private static long FromEnvironment()
    {
        string? v = Environment.GetEnvironmentVariable(MaxLineBytesVariable);
        if (string.IsNullOrWhiteSpace(v)) return DefaultMaxLineBytes;
        return long.TryParse(v, System.Globalization.NumberStyles.Integer, System.Globalization.CultureInfo.InvariantCulture, out long n) && n >= 1
            ? n : throw new FineAlignException($"{MaxLineBytesVariable}={v}: expected a positive number of bytes");
    }

    /// <summary>The file's lines as objects. The path must be a regular file (not a folder, device or FIFO).</summary>
    public static IEnumerable<JsonlLine> Read(string path)
    {
        InputFile.RequireRegular(path);
        return ReadLines(path, MaxLineBytes);
    }

    /// <summary>
    /// Duplicate keys are an error: which value wins is ambiguous, and JsonObject would otherwise throw an
    /// ArgumentException on first access instead of a message naming the line.
    /// </summary>
    private static IEnumerable<JsonlLine> ReadLines(string path, long maxLineBytes)
    {
        var reader = new LineReader(path, maxLineBytes);
        try
        {
            while (reader.Next() is { } line0)
            {
                long lineNo = reader.LineNumber;
                JsonlLine? parsed = Parse(path, lineNo, line0.Span);
                if (parsed is { } l) yield return l;
            }
        }
        finally { reader.Dispose(); }
    }

    private static JsonlLine? Parse(string path, long lineNo, ReadOnlySpan<byte> line)
    {
        if (lineNo == 1 && line.StartsWith("\uFEFF"u8)) line = line[3..];
        if (line.Length > 0 && line[^1] == (byte)'\r') line = line[..^1];
        if (line.Trim(" \t"u8).Length == 0) return null;
        if (!Utf8.IsValid(line))
            throw new DataFormatException(path, lineNo, null, $"invalid UTF-8 at byte {InvalidUtf8Offset(line)} of the line");
        CheckSurrogates(path, lineNo, line);   // before parsing: JsonObject's duplicate-key check would throw on such a key
        JsonNode? node;
        try { node = JsonNode.Parse(line, documentOptions: StrictJson.Options); }
        catch (JsonException e) { throw new DataFormatException(path, lineNo, null, "invalid JSON: " + JsonError(e)); }
        if (node is not JsonObject obj)
            throw new DataFormatException(path, lineNo, null, $"expected a JSON object, got {Kind(node)}");
        return new JsonlLine(lineNo, obj);
    }

    /// <summary>
    /// A lone UTF-16 surrogate escape ("\ud800", which Python's json.dumps writes for broken scraped text) cannot become a
    /// .NET or UTF-8 string. It is refused here, naming the field, rather than replaced with U+FFFD: the text is damaged,
    /// and Python's own pipeline fails on it too (the tokenizer cannot encode it). Only lines with a \uD8xx–\uDFxx escape
    /// are scanned, so ordinary lines cost nothing.
    /// </summary>
    private static void CheckSurrogates(string path, long lineNo, ReadOnlySpan<byte> line)
    {
        if (!HasSurrogateEscape(line)) return;
        try { ScanSurrogates(path, lineNo, line); }
        catch (JsonException) { /* malformed: JsonNode.Parse reports it with its position */ }
    }

    private static void ScanSurrogates(string path, long lineNo, ReadOnlySpan<byte> line)
    {
        var r = new Utf8JsonReader(line, new JsonReaderOptions { MaxDepth = StrictJson.Options.MaxDepth });
        string? field = null;               // the nearest property name: 'content' inside messages[i]
        var outer = new Stack<string?>();   // the field in force outside each open container
        while (r.Read())
        {
            switch (r.TokenType)
            {
                case JsonTokenType.StartObject or JsonTokenType.StartArray: outer.Push(field); break;
                case JsonTokenType.EndObject or JsonTokenType.EndArray: field = outer.Pop(); break;
                case JsonTokenType.PropertyName:
                    if (!TryString(ref r, out field))
                        throw new DataFormatException(path, lineNo, null, "a property name holds a lone UTF-16 surrogate escape (e.g. \\ud800), which is not text");
                    break;
                case JsonTokenType.String:
                    if (!TryString(ref r, out _))
                        throw new DataFormatException(path, lineNo, field,
                            "holds a lone UTF-16 surrogate escape (e.g. \\ud800, as Python writes for broken text), which is not valid text; " +
                            "repair the data (Python: s.encode('utf-16', 'surrogatepass').decode('utf-16', 'replace'))");
                    break;
            }
        }
    }

    private static bool TryString(ref Utf8JsonReader r, out string? value)
    {
        try { value = r.GetString(); return true; }
        catch (InvalidOperationException) { value = null; return false; }
    }

    private static bool HasSurrogateEscape(ReadOnlySpan<byte> line)
    {
        for (int i = line.IndexOf("\\u"u8); i >= 0 && i + 3 < line.Length; )
        {
            byte a = line[i + 2], b = line[i + 3];
            if ((a is (byte)'d' or (byte)'D') && (b is >= (byte)'8' and <= (byte)'9' || b is >= (byte)'a' and <= (byte)'f' || b is >= (byte)'A' and <= (byte)'F'))
                return true;
            int next = line[(i + 2)..].IndexOf("\\u"u8);
            i = next < 0 ? -1 : i + 2 + next;
        }
        return false;
    }

    /// <summary>
    /// Splits a file on '\n' into one reused, growable buffer (64 KiB reads): a line is held once, never copied out, and
    /// a line longer than the limit stops with an error naming the line before it is held whole.
    /// </summary>
    private sealed class LineReader(string path, long maxLineBytes) : IDisposable
    {
        private readonly FileStream _stream = new(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan);
        private byte[] _buf = new byte[1 << 16];
        private int _start, _end;   // unconsumed bytes are _buf[_start.._end)
        private bool _eof;
        public long LineNumber { get; private set; }

        public ReadOnlyMemory<byte>? Next()
        {
            int scanned = 0;   // bytes of the current line already searched for '\n'
            while (true)
            {
                int nl = _buf.AsSpan(_start + scanned, _end - _start - scanned).IndexOf((byte)'\n');
                if (nl >= 0)
                {
                    int len = scanned + nl;
                    CheckLength(len);
                    var line = new ReadOnlyMemory<byte>(_buf, _start, len);
                    _start += len + 1;
                    LineNumber++;
                    return line;
                }
                scanned = _end - _start;
                CheckLength(scanned);
                if (_eof)
                {
                    if (scanned == 0) return null;
                    var last = new ReadOnlyMemory<byte>(_buf, _start, scanned);
                    _start = _end;
                    LineNumber++;
                    return last;
                }
                Fill();
            }
        }

        private void CheckLength(long len)
        {
            if (len > maxLineBytes)
                throw new DataFormatException(path, LineNumber + 1, null,
                    $"line is longer than the limit of {maxLineBytes:N0} bytes (is the file JSONL, one object per line?); " +
                    $"raise the limit with --max-line-bytes or {MaxLineBytesVariable}");
        }

        private void Fill()
        {
            if (_start > 0)   // move the partial line to the front
            {
                Buffer.BlockCopy(_buf, _start, _buf, 0, _end - _start);
                _end -= _start; _start = 0;
            }
            if (_end == _buf.Length)   // a line longer than the buffer
            {
                // A regular file: find where the line ends by reading ahead (without holding it), then grow once to
                // exactly its length, so a long line costs 1× its length (doubling would allocate ~4× and keep 2×).
                long grown = _stream.CanSeek ? LineEndAhead() : Math.Min((long)_buf.Length * 2, maxLineBytes + 1);
                Array.Resize(ref _buf, (int)Math.Min(Math.Max(grown, _buf.Length + 1), Array.MaxLength));
            }
            int n = _stream.Read(_buf, _end, Math.Min(_buf.Length - _end, 1 << 20));
            if (n == 0) _eof = true;
            _end += n;
        }

        // Bytes from the buffered partial line to its '\n' (inclusive) or the end of the file; stops with the line-length
        // error once the limit is passed. The stream position is restored.
        private long LineEndAhead()
        {
            long start = _stream.Position, have = _end - _start;
            var scratch = new byte[1 << 16];
            try
            {
                int n;
                while ((n = _stream.Read(scratch, 0, scratch.Length)) > 0)
                {
                    int nl = scratch.AsSpan(0, n).IndexOf((byte)'\n');
                    if (nl >= 0) return have + nl + 1;
                    have += n;
                    CheckLength(have);
                }
                return have;
            }
            finally { _stream.Position = start; }
        }

        public void Dispose() => _stream.Dispose();
    }

    // 1-based position of the first byte that is not valid UTF-8.
    private static int InvalidUtf8Offset(ReadOnlySpan<byte> line)
    {
        var chars = new char[line.Length];
        Utf8.ToUtf16(line, chars, out int read, out _, replaceInvalidSequences: false);
        return read + 1;
    }

    private static string OneLine(string s) => s.Replace('\r', ' ').Replace('\n', ' ');

    /// <summary>
    /// System.Text.Json's message without its position suffix ("LineNumber: 0 | BytePositionInLine: 12."): in JSONL the
    /// line number is ours (every line is its own document, so its "LineNumber: 0" contradicts the file:line prefix).
    /// </summary>
    internal static string JsonError(JsonException e)
    {
        string m = OneLine(e.Message);
        int i = m.IndexOf(" LineNumber:", StringComparison.Ordinal);
        if (i < 0) i = m.IndexOf(" Path:", StringComparison.Ordinal);
        string head = (i >= 0 ? m[..i] : m).TrimEnd(' ', '|', '.');
        return e.BytePositionInLine is long b ? $"{head} (at byte {b + 1} of the line)" : head;
    }

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

    /// <summary>
    /// A finite number that also fits float32, the dtype the losses compute in (fp32 even under mixed precision):
    /// a margin of 1e300 is a finite double but becomes Infinity in the loss, so it is refused here, at read time.
    /// </summary>
    public static double RequireFloat32(this JsonlLine l, string file, string field) =>
        CheckFloat32(l.RequireNumber(file, field), file, l.LineNumber, field);

    /// <summary>Refuses a value that is not finite as float32 (see <see cref="RequireFloat32"/>).</summary>
    public static double CheckFloat32(double value, string file, long line, string field) =>
        double.IsFinite(value) && float.IsFinite((float)value) ? value
            : throw new DataFormatException(file, line, field,
                $"{value:G4} does not fit float32, the dtype the loss is computed in (largest magnitude {float.MaxValue:G3})");

    /// <summary>
    /// Pre-tokenised ids must index the vocabulary: an id outside [0, vocabSize) would otherwise crash inside libtorch's
    /// embedding lookup, long after the run started. Called while reading, before any output exists.
    /// </summary>
    public static void CheckTokenIds(ReadOnlySpan<int> ids, int vocabSize, string file, long line, string field)
    {
        for (int i = 0; i < ids.Length; i++)
            if ((uint)ids[i] >= (uint)vocabSize)
                throw new DataFormatException(file, line, field,
                    $"element {i}: token id {ids[i]} is outside the vocabulary [0, {vocabSize}) of the tokenizer");
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
