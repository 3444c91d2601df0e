using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace FineAlign.Text.Pipeline;

/// <summary>A tokenizer.json <c>normalizer</c>: rewrites the text of each section between added tokens.</summary>
internal abstract class Normalizer
{
    public abstract string Normalize(string s);

    /// <summary>
    /// Normalises text that continues earlier text (<paramref name="midText"/>): a <c>Prepend</c> (SentencePiece's
    /// dummy "▁" prefix) is not applied there, everything else is.
    /// </summary>
    public virtual string Normalize(string s, bool midText) => Normalize(s);

    /// <summary>Builds the normalizer of <paramref name="f"/>; an unknown or unsupported type is an error naming it.</summary>
    public static Normalizer Parse(JsonFields f)
    {
        string type = f.Type;
        switch (type)
        {
            case "NFC": return new UnicodeForm(NormalizationForm.FormC);
            case "NFD": return new UnicodeForm(NormalizationForm.FormD);
            case "NFKC": return new UnicodeForm(NormalizationForm.FormKC);
            case "NFKD": return new UnicodeForm(NormalizationForm.FormKD);
            case "Lowercase": return new Lowercase();
            case "Strip": return new Strip(f.Bool("strip_left", true), f.Bool("strip_right", true));
            case "StripAccents": return new StripAccents();
            case "Prepend": return new Prepend(f.String("prepend"));
            case "Replace": return new Replace(TextPattern.Parse(f, "pattern"), f.String("content"));
            case "ByteLevel": return new ByteLevelNormalizer();
            case "BertNormalizer":
                bool lower = f.Bool("lowercase", true);
                bool? stripAccents = f.Get("strip_accents") is null ? null : f.Bool("strip_accents", false);
                return new Bert(f.Bool("clean_text", true), f.Bool("handle_chinese_chars", true), stripAccents ?? lower, lower);
            case "Sequence":
                var arr = f.Array("normalizers");
                var items = new List<Normalizer>();
                int i = 0;
                foreach (var e in arr.EnumerateArray()) items.Add(Parse(new JsonFields(f.File, f.Path($"normalizers[{i++}]"), e)));
                return new Sequence(items);
            case "Precompiled":
                throw f.Fail("normalizer 'Precompiled' (a SentencePiece charsmap, used with Unigram models) is not supported; " +
                             "use the folder's tokenizer.model (SentencePiece) instead");
            default:
                throw f.Fail($"unknown normalizer type '{type}' (supported: NFC, NFD, NFKC, NFKD, Lowercase, Strip, StripAccents, " +
                             "Prepend, Replace, ByteLevel, BertNormalizer, Sequence)");
        }
    }

    private sealed class UnicodeForm(NormalizationForm form) : Normalizer
    {
        public override string Normalize(string s) => s.IsNormalized(form) ? s : s.Normalize(form);
    }

    /// <summary>Rust's char::to_lowercase: full mapping, so 'İ' becomes "i̇" (two characters), as in tokenizers.</summary>
    private sealed class Lowercase : Normalizer
    {
        public override string Normalize(string s)
        {
            string lower = s.ToLowerInvariant();
            return s.Contains('\u0130') ? ReplaceDotted(s, lower) : lower;
        }

        private static string ReplaceDotted(string s, string lower)
        {
            var sb = new StringBuilder(s.Length + 4);
            for (int i = 0; i < s.Length; i++) sb.Append(s[i] == '\u0130' ? "i\u0307" : lower[i].ToString());
            return sb.ToString();
        }
    }

    private sealed class Strip(bool left, bool right) : Normalizer
    {
        public override string Normalize(string s)
        {
            int start = 0, end = s.Length;
            if (left) while (start < end && IsWs(s, start, out int n)) start += n;
            if (right) while (end > start && IsWsBefore(s, end, out int n)) end -= n;
            return s[start..end];
        }

        private static bool IsWs(string s, int i, out int n)
        {
            Rune.DecodeFromUtf16(s.AsSpan(i), out Rune r, out n);
            return Splitting.IsWhitespace(r);
        }

        private static bool IsWsBefore(string s, int end, out int n)
        {
            Rune.DecodeLastFromUtf16(s.AsSpan(0, end), out Rune r, out n);
            return Splitting.IsWhitespace(r);
        }
    }

    private sealed class StripAccents : Normalizer
    {
        public override string Normalize(string s) => RemoveMarks(s);
    }

    internal static string RemoveMarks(string s)
    {
        var sb = new StringBuilder(s.Length);
        foreach (Rune r in s.EnumerateRunes())
            if (Rune.GetUnicodeCategory(r) is not (UnicodeCategory.NonSpacingMark or UnicodeCategory.SpacingCombiningMark or UnicodeCategory.EnclosingMark))
                sb.Append(r.ToString());
        return sb.ToString();
    }

    private sealed class Prepend(string prefix) : Normalizer
    {
        public override string Normalize(string s) => s.Length == 0 ? s : prefix + s;
        public override string Normalize(string s, bool midText) => midText ? s : Normalize(s);
    }

    private sealed class Replace(TextPattern pattern, string content) : Normalizer
    {
        public override string Normalize(string s) => pattern.ReplaceAll(s, content);
    }

    private sealed class ByteLevelNormalizer : Normalizer
    {
        public override string Normalize(string s) => PreTokenizer.ToByteLevel(s);
    }

    /// <summary>BERT's normaliser (tokenizers normalizers/bert.rs).</summary>
    private sealed class Bert(bool cleanText, bool chineseChars, bool stripAccents, bool lowercase) : Normalizer
    {
        public override string Normalize(string s)
        {
            var sb = new StringBuilder(s.Length);
            foreach (Rune r in s.EnumerateRunes())
            {
                if (cleanText)
                {
                    if (r.Value is 0 or 0xFFFD || IsControl(r)) continue;
                    if (Splitting.IsWhitespace(r)) { sb.Append(' '); continue; }
                }
                if (chineseChars && IsChinese(r.Value)) { sb.Append(' ').Append(r.ToString()).Append(' '); continue; }
                sb.Append(r.ToString());
            }
            string t = sb.ToString();
            if (stripAccents)  // bert.rs: NFD, then drop nonspacing marks (Mn) only
                t = string.Concat(t.Normalize(NormalizationForm.FormD).EnumerateRunes()
                    .Where(r => Rune.GetUnicodeCategory(r) != UnicodeCategory.NonSpacingMark).Select(r => r.ToString()));
            if (lowercase) t = new Lowercase().Normalize(t);
            return t;
        }

        private static bool IsControl(Rune r) => r.Value is not ('\t' or '\n' or '\r')
            && Rune.GetUnicodeCategory(r) is UnicodeCategory.Control or UnicodeCategory.Format
                or UnicodeCategory.PrivateUse or UnicodeCategory.Surrogate or UnicodeCategory.OtherNotAssigned;

        private static bool IsChinese(int c) => c is >= 0x4E00 and <= 0x9FFF or >= 0x3400 and <= 0x4DBF or >= 0x20000 and <= 0x2A6DF
            or >= 0x2A700 and <= 0x2B73F or >= 0x2B740 and <= 0x2B81F or >= 0x2B920 and <= 0x2CEAF or >= 0xF900 and <= 0xFAFF
            or >= 0x2F800 and <= 0x2FA1F;
    }

    private sealed class Sequence(List<Normalizer> items) : Normalizer
    {
        public override string Normalize(string s) => Normalize(s, false);

        public override string Normalize(string s, bool midText)
        {
            foreach (var n in items) s = n.Normalize(s, midText);
            return s;
        }
    }
}

/// <summary>A tokenizer.json pattern: <c>{"String": "..."}</c> (literal) or <c>{"Regex": "..."}</c>.</summary>
internal sealed class TextPattern
{
    private TextPattern(string? literal, UnicodeRegex? regex) { Literal = literal; Regex = regex; }
    public string? Literal { get; }
    public UnicodeRegex? Regex { get; }

    public static TextPattern Parse(JsonFields f, string field)
    {
        var p = f.Child(field);
        if (p.Obj.TryGetProperty("String", out var s))
            return s.ValueKind == JsonValueKind.String ? new TextPattern(s.GetString()!, null) : throw p.Fail("String", "expected a string");
        if (p.Obj.TryGetProperty("Regex", out var r))
            return r.ValueKind == JsonValueKind.String
                ? new TextPattern(null, new UnicodeRegex(r.GetString()!, f.File, p.Path("Regex")))
                : throw p.Fail("Regex", "expected a string");
        throw p.Fail("expected {\"String\": ...} or {\"Regex\": ...}");
    }

    public List<Stretch> Find(string s)
    {
        if (Regex is not null) return Splitting.FindRegex(s, Regex);
        // A literal is matched as the escaped regex (what tokenizers does for Split's String pattern).
        var result = new List<Stretch>();
        if (Literal!.Length == 0) { if (s.Length > 0) result.Add(new Stretch(0, s.Length, false)); return result; }
        int prev = 0;
        for (int i = s.IndexOf(Literal, StringComparison.Ordinal); i >= 0; i = s.IndexOf(Literal, prev, StringComparison.Ordinal))
        {
            if (i > prev) result.Add(new Stretch(prev, i, false));
            result.Add(new Stretch(i, i + Literal.Length, true));
            prev = i + Literal.Length;
        }
        if (prev < s.Length) result.Add(new Stretch(prev, s.Length, false));
        return result;
    }

    public string ReplaceAll(string s, string content)
    {
        if (Literal is not null) return Literal.Length == 0 ? s : s.Replace(Literal, content, StringComparison.Ordinal);
        var sb = new StringBuilder(s.Length);
        int prev = 0;
        foreach (var (start, end) in Regex!.Matches(s))
        {
            sb.Append(s, prev, start - prev).Append(content);
            prev = end;
        }
        return sb.Append(s, prev, s.Length - prev).ToString();
    }
}
