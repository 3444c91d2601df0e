using System.Globalization;
using System.Text;
using System.Text.Json;

namespace FineAlign.Text.Pipeline;

/// <summary>One entry of tokenizer.json's <c>added_tokens</c>.</summary>
public sealed record AddedToken(int Id, string Content, bool Special, bool LStrip, bool RStrip, bool SingleWord, bool Normalized);

/// <summary>
/// Added tokens as tokenizers' added_vocabulary.rs finds them: leftmost-longest matches, first the tokens with
/// <c>normalized: false</c> in the raw text, then those with <c>normalized: true</c> in each normalised section
/// (their contents normalised the same way). <c>single_word</c> discards a match touching a word character;
/// <c>lstrip</c>/<c>rstrip</c> swallow the whitespace on that side.
/// </summary>
internal sealed class AddedVocabulary
{
    private readonly Matcher _raw, _normalized;

    public AddedVocabulary(List<AddedToken> tokens, Normalizer? normalizer)
    {
        Tokens = tokens;
        ById = new Dictionary<int, AddedToken>();
        foreach (var t in tokens) ById[t.Id] = t;
        _raw = new Matcher(tokens.Where(t => !t.Normalized).Select(t => (t.Content, t)));
        _normalized = new Matcher(tokens.Where(t => t.Normalized).Select(t => (normalizer?.Normalize(t.Content) ?? t.Content, t)));
    }

    public List<AddedToken> Tokens { get; }
    public Dictionary<int, AddedToken> ById { get; }

    public static List<AddedToken> Parse(string file, JsonElement? arr)
    {
        var result = new List<AddedToken>();
        if (arr is null) return result;
        if (arr.Value.ValueKind != JsonValueKind.Array) throw new FineAlignException($"{file}: added_tokens: expected a list, got {JsonFields.Kind(arr.Value)}");
        int i = 0;
        foreach (var e in arr.Value.EnumerateArray())
        {
            var f = new JsonFields(file, $"added_tokens[{i++}]", e);
            int id = f.Int("id");
            if (id < 0) throw f.Fail("id", "must not be negative");
            string content = f.String("content");
            if (content.Length == 0) throw f.Fail("content", "is an empty string; a token needs at least one character");
            bool special = f.Bool("special", false);
            result.Add(new AddedToken(id, content, special, f.Bool("lstrip", false), f.Bool("rstrip", false),
                f.Bool("single_word", false), f.Bool("normalized", !special)));
        }
        return result;
    }

    /// <summary>Raw-text matches (tokens with normalized: false).</summary>
    public List<(int Start, int End, int Id)> SplitRaw(string s) => Find(s, _raw);

    /// <summary>Matches in normalised text (tokens with normalized: true).</summary>
    public List<(int Start, int End, int Id)> SplitNormalized(string s) => Find(s, _normalized);

    // Rust's find_matches: the splits cover the string; Id = -1 for text between tokens.
    private static List<(int, int, int)> Find(string s, Matcher m)
    {
        var splits = new List<(int, int, int)>();
        if (s.Length == 0) return splits;
        if (m.IsEmpty) { splits.Add((0, s.Length, -1)); return splits; }
        int startOffset = 0, i = 0;
        while (i < s.Length)
        {
            var (tok, length) = m.MatchAt(s, i);
            if (tok is null) { i++; continue; }
            int start = i, stop = i + length;
            i = stop;
            if (start < startOffset) continue;  // overlaps what an rstrip already took
            if (tok.SingleWord)
            {
                bool startSpace = start == 0 || !EndsWithWord(s, start);
                bool stopSpace = stop == s.Length || !StartsWithWord(s, stop);
                if (!startSpace || !stopSpace) continue;
            }
            if (tok.LStrip)
            {
                int ns = start;
                while (ns > 0 && IsWsBefore(s, ns, out int n)) ns -= n;
                start = Math.Max(ns, startOffset);
            }
            if (tok.RStrip)
            {
                while (stop < s.Length && IsWsAt(s, stop, out int n)) stop += n;
                i = stop;
            }
            if (startOffset < start) splits.Add((startOffset, start, -1));
            splits.Add((start, stop, tok.Id));
            startOffset = stop;
        }
        if (startOffset != s.Length) splits.Add((startOffset, s.Length, -1));
        return splits;
    }

    private static bool IsWsAt(string s, int i, out int n) { Rune.DecodeFromUtf16(s.AsSpan(i), out Rune r, out n); return Splitting.IsWhitespace(r); }
    private static bool IsWsBefore(string s, int end, out int n) { Rune.DecodeLastFromUtf16(s.AsSpan(0, end), out Rune r, out n); return Splitting.IsWhitespace(r); }
    private static bool EndsWithWord(string s, int end) { Rune.DecodeLastFromUtf16(s.AsSpan(0, end), out Rune r, out _); return IsWordChar(r); }
    private static bool StartsWithWord(string s, int start) { Rune.DecodeFromUtf16(s.AsSpan(start), out Rune r, out _); return IsWordChar(r); }

    /// <summary>The Rust regex crate's Unicode <c>\w</c>.</summary>
    internal static bool IsWordChar(Rune r) => r.Value is 0x200C or 0x200D or >= 0x24B6 and <= 0x24E9 || Rune.GetUnicodeCategory(r) is
        UnicodeCategory.UppercaseLetter or UnicodeCategory.LowercaseLetter or UnicodeCategory.TitlecaseLetter or UnicodeCategory.ModifierLetter
        or UnicodeCategory.OtherLetter or UnicodeCategory.LetterNumber or UnicodeCategory.NonSpacingMark or UnicodeCategory.SpacingCombiningMark
        or UnicodeCategory.EnclosingMark or UnicodeCategory.DecimalDigitNumber or UnicodeCategory.ConnectorPunctuation;

    /// <summary>Leftmost-longest matching of many literal strings: candidates grouped by first character, longest first.</summary>
    private sealed class Matcher
    {
        private readonly Dictionary<char, List<(string Text, AddedToken Token)>> _byFirst = new();

        public Matcher(IEnumerable<(string Text, AddedToken Token)> patterns)
        {
            foreach (var (text, tok) in patterns)
            {
                if (text.Length == 0) continue;
                if (!_byFirst.TryGetValue(text[0], out var list)) _byFirst[text[0]] = list = [];
                list.Add((text, tok));
            }
            foreach (var list in _byFirst.Values) list.Sort((a, b) => b.Text.Length.CompareTo(a.Text.Length));
        }

        public bool IsEmpty => _byFirst.Count == 0;
        public (AddedToken? Token, int Length) MatchAt(string s, int i)
        {
            if (!_byFirst.TryGetValue(s[i], out var list)) return (null, 0);
            foreach (var (text, tok) in list)
                if (text.Length <= s.Length - i && string.CompareOrdinal(s, i, text, 0, text.Length) == 0) return (tok, text.Length);
            return (null, 0);
        }
    }
}
