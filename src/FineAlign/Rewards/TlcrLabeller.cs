using FineAlign.Data.Corpus;
using System.Text.Json;
using System.Text.Json.Nodes;
using FineAlign.Data;
using FineAlign.Text;

namespace FineAlign.Rewards;

/// <summary>
/// One response with a label per response token: +1 positive, −1 negative, 0 neutral (TLCR §3.1).
/// <see cref="ResponseIds"/> are the response's own tokens (no BOS); the prompt is kept as text.
/// <see cref="Kind"/>: "original", "revised" or "spans".
/// </summary>
public sealed record LabelledResponse(string Prompt, string Response, int[] ResponseIds, sbyte[] Labels, string Kind)
{
    public int Positives => Labels.Count(l => l > 0);
    public int Negatives => Labels.Count(l => l < 0);
}

/// <summary>A labelled character span of a response: [Start, End) in UTF-16 chars, Label +1 or −1.</summary>
public readonly record struct LabelSpan(int Start, int End, int Label);

/// <summary>
/// TLCR token labels (Yoon et al. 2024, §3.1): tokenise an original response and its minimal revision with the
/// policy tokenizer, align them with <see cref="TokenAlignment"/> (Levenshtein on token ids) and label deleted or
/// replaced original tokens −1, inserted or replacing revised tokens +1, kept tokens 0. Pre-labelled character
/// spans are accepted too: a token gets a span's label when its characters overlap the span.
/// </summary>
public static class TlcrLabeller
{
    /// <summary>Both labelled sides (original, then revised) of every revision pair of the built-in corpus.</summary>
    public static IEnumerable<LabelledResponse> Label(TextTokenizer tokenizer, IEnumerable<BuiltinData.RevisionPair> pairs)
    {
        foreach (var p in pairs)
        {
            var (a, b, _) = FromRevision(tokenizer, p.Prompt, p.Original, p.Revised);
            yield return a;
            yield return b;
        }
    }

    /// <summary>Labels for both sides of a revision pair.</summary>
    public static (LabelledResponse Original, LabelledResponse Revised, int Distance) FromRevision(
        TextTokenizer tokenizer, string prompt, string original, string revised)
    {
        var o = tokenizer.Encode(original);
        var r = tokenizer.Encode(revised);
        var a = TokenAlignment.Align(o, r);
        return (new LabelledResponse(prompt, original, o, a.OriginalLabels, "original"),
                new LabelledResponse(prompt, revised, r, a.RevisedLabels, "revised"), a.Distance);
    }

    /// <summary>Labels from character spans of <paramref name="response"/>; overlapping spans of opposite sign are an error.</summary>
    public static LabelledResponse FromSpans(TextTokenizer tokenizer, string prompt, string response, IReadOnlyList<LabelSpan> spans)
    {
        foreach (var s in spans)
        {
            if (s.Label is not (1 or -1)) throw new FineAlignException($"span [{s.Start}, {s.End}) has label {s.Label}; labels must be +1 or -1");
            if (s.Start < 0 || s.End > response.Length || s.Start >= s.End)
                throw new FineAlignException($"span [{s.Start}, {s.End}) is not inside the response (length {response.Length})");
        }
        var ids = tokenizer.Encode(response);
        var ends = TokenText.CharEnds(tokenizer, ids);
        var labels = new sbyte[ids.Length];
        int start = 0;
        for (int i = 0; i < ids.Length; i++)
        {
            int end = Math.Max(start, ends[i]);
            foreach (var s in spans)
            {
                if (end <= s.Start || start >= s.End) continue; // no overlap
                if (labels[i] != 0 && labels[i] != s.Label)
                    throw new FineAlignException($"token {i} overlaps spans of both signs");
                labels[i] = (sbyte)s.Label;
            }
            start = end;
        }
        return new LabelledResponse(prompt, response, ids, labels, "spans");
    }

    /// <summary>
    /// Reads input JSONL: either <c>{"prompt", "original", "revised"}</c> (two labelled responses per line) or
    /// <c>{"prompt", "response", "spans": [{"start", "end", "label"}]}</c> (one). <c>prompt</c> may be omitted (empty).
    /// </summary>
    public static IEnumerable<LabelledResponse> ReadInput(string path, TextTokenizer tokenizer)
    {
        foreach (var line in JsonlReader.Read(path))
        {
            string prompt = line.Object.ContainsKey("prompt") ? line.RequireString(path, "prompt") : "";
            if (line.Object.ContainsKey("spans"))
            {
                string response = line.RequireString(path, "response");
                if (line.Object["spans"] is not JsonArray arr) throw JsonlReader.Wrong(line, path, "spans", "an array of {start, end, label}");
                var spans = new List<LabelSpan>();
                foreach (var node in arr)
                {
                    if (node is not JsonObject o || !TryInt(o["start"], out int s) || !TryInt(o["end"], out int e) || !TryInt(o["label"], out int l))
                        throw new DataFormatException(path, line.LineNumber, "spans", "each span needs integer start, end and label");
                    spans.Add(new LabelSpan(s, e, l));
                }
                LabelledResponse labelled;
                try { labelled = FromSpans(tokenizer, prompt, response, spans); }
                catch (FineAlignException ex) when (ex is not DataFormatException)
                { throw new DataFormatException(path, line.LineNumber, "spans", ex.Message); }
                yield return labelled;
            }
            else
            {
                string original = line.RequireString(path, "original");
                string revised = line.RequireString(path, "revised");
                var (a, b, _) = FromRevision(tokenizer, prompt, original, revised);
                yield return a;
                yield return b;
            }
        }
    }

    /// <summary>Writes one line per labelled response: prompt, response, kind, input_ids, labels.</summary>
    public static int WriteJsonl(string path, IEnumerable<LabelledResponse> items)
    {
        int n = 0;
        using var stream = File.Create(path);
        foreach (var item in items)
        {
            using (var w = new Utf8JsonWriter(stream))
            {
                w.WriteStartObject();
                w.WriteString("prompt", item.Prompt);
                w.WriteString("response", item.Response);
                w.WriteString("kind", item.Kind);
                w.WriteStartArray("input_ids"); foreach (var id in item.ResponseIds) w.WriteNumberValue(id); w.WriteEndArray();
                w.WriteStartArray("labels"); foreach (var l in item.Labels) w.WriteNumberValue(l); w.WriteEndArray();
                w.WriteEndObject();
            }
            stream.WriteByte((byte)'\n');
            n++;
        }
        return n;
    }

    /// <summary>Reads what <see cref="WriteJsonl"/> wrote (input_ids and labels of equal length, labels in {−1, 0, 1}).</summary>
    /// <param name="vocabSize">When given, every id must lie in [0, vocabSize) (checked at read time, naming file:line:field).</param>
    public static List<LabelledResponse> ReadLabelled(string path, int? vocabSize = null)
    {
        var list = new List<LabelledResponse>();
        foreach (var line in JsonlReader.Read(path))
        {
            var ids = line.RequireIntArray(path, "input_ids");
            var labels = line.RequireIntArray(path, "labels");
            if (vocabSize is int v) JsonlReader.CheckTokenIds(ids, v, path, line.LineNumber, "input_ids");
            if (labels.Length != ids.Length)
                throw new DataFormatException(path, line.LineNumber, "labels", $"has {labels.Length} entries but input_ids has {ids.Length}");
            int bad = Array.FindIndex(labels, l => l is < -1 or > 1);
            if (bad >= 0) throw new DataFormatException(path, line.LineNumber, "labels", $"element {bad} is {labels[bad]}; labels must be -1, 0 or 1");
            string prompt = line.Object.ContainsKey("prompt") ? line.RequireString(path, "prompt") : "";
            string response = line.Object.ContainsKey("response") ? line.RequireString(path, "response") : "";
            string kind = line.Object["kind"] is JsonValue k && k.TryGetValue(out string? ks) ? ks : "labelled";
            list.Add(new LabelledResponse(prompt, response, ids, labels.Select(l => (sbyte)l).ToArray(), kind));
        }
        return list;
    }

    private static bool TryInt(JsonNode? node, out int value)
    {
        value = 0;
        if (node is JsonValue v && v.GetValueKind() == JsonValueKind.Number && v.TryGetValue(out double d) && d == Math.Floor(d) && Math.Abs(d) < int.MaxValue)
        {
            value = (int)d;
            return true;
        }
        return false;
    }
}

/// <summary>Character positions of tokens, found by decoding growing prefixes (works for any tokenizer).</summary>
public static class TokenText
{
    /// <summary>End (exclusive, UTF-16 chars) of each token in Decode(ids); non-decreasing.</summary>
    public static int[] CharEnds(TextTokenizer tokenizer, IReadOnlyList<int> ids)
    {
        var ends = new int[ids.Count];
        int last = 0;
        for (int i = 0; i < ids.Count; i++)
        {
            last = Math.Max(last, tokenizer.Decode(ids.Take(i + 1)).Length);
            ends[i] = last;
        }
        return ends;
    }

    /// <summary>
    /// Per-token rewards from per-character rewards: a token gets the sum over the characters it completes
    /// (so a word's valence on its last char lands on the token that finishes the word).
    /// </summary>
    public static float[] FromCharRewards(TextTokenizer tokenizer, IReadOnlyList<int> ids, float[] charRewards)
    {
        var ends = CharEnds(tokenizer, ids);
        var r = new float[ids.Count];
        int start = 0;
        for (int i = 0; i < ids.Count; i++)
        {
            int end = Math.Min(ends[i], charRewards.Length);
            for (int c = start; c < end; c++) r[i] += charRewards[c];
            start = Math.Max(start, end);
        }
        return r;
    }
}
