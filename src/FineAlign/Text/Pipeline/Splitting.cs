using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace FineAlign.Text.Pipeline;

/// <summary>What happens to the pieces a pattern matches (tokenizers' <c>SplitDelimiterBehavior</c>).</summary>
internal enum SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous }

/// <summary>A stretch of a string and whether the pattern matched it.</summary>
internal readonly record struct Stretch(int Start, int End, bool IsMatch);

/// <summary>
/// The splitting rules of Rust <c>tokenizers</c> (tokenizer/pattern.rs and NormalizedString::split): a pattern
/// cuts a string into alternating matched / unmatched stretches that cover it, then a
/// <see cref="SplitBehavior"/> decides which stretches are kept and which are glued together.
/// </summary>
internal static class Splitting
{
    public static SplitBehavior ParseBehavior(JsonFields f, string field, SplitBehavior fallback)
    {
        string? b = f.OptString(field);
        if (b is null) return fallback;
        return b switch
        {
            "Removed" => SplitBehavior.Removed,
            "Isolated" => SplitBehavior.Isolated,
            "MergedWithPrevious" => SplitBehavior.MergedWithPrevious,
            "MergedWithNext" => SplitBehavior.MergedWithNext,
            "Contiguous" => SplitBehavior.Contiguous,
            _ => throw f.Fail(field, $"unknown behavior '{b}' (expected Removed, Isolated, MergedWithPrevious, MergedWithNext or Contiguous)"),
        };
    }

    /// <summary>Every code point satisfying <paramref name="pred"/> is a match of its own (a char-predicate Pattern).</summary>
    public static List<Stretch> FindChars(string s, Func<Rune, bool> pred)
    {
        var result = new List<Stretch>();
        int last = 0, i = 0;
        while (i < s.Length)
        {
            Rune.DecodeFromUtf16(s.AsSpan(i), out Rune r, out int n);
            if (pred(r))
            {
                if (last < i) result.Add(new Stretch(last, i, false));
                result.Add(new Stretch(i, i + n, true));
                last = i + n;
            }
            i += n;
        }
        if (last < s.Length) result.Add(new Stretch(last, s.Length, false));
        return result;
    }

    /// <summary>Leftmost non-overlapping matches of a regex; the gaps between them are unmatched stretches.</summary>
    public static List<Stretch> FindRegex(string s, UnicodeRegex re)
    {
        var result = new List<Stretch>();
        int prev = 0;
        foreach (var (start, end) in re.Matches(s))
        {
            if (end == start) continue;  // Rust's find_iter yields empty matches too, but they produce empty (dropped) pieces
            if (prev != start) result.Add(new Stretch(prev, start, false));
            result.Add(new Stretch(start, end, true));
            prev = end;
        }
        if (prev != s.Length) result.Add(new Stretch(prev, s.Length, false));
        return result;
    }

    /// <summary>The kept (start, end) ranges after applying <paramref name="behavior"/>; empty ranges are dropped.</summary>
    public static List<(int Start, int End)> Apply(List<Stretch> stretches, SplitBehavior behavior, bool invert)
    {
        var acc = new List<(int Start, int End)>(stretches.Count);
        bool prev = false;
        switch (behavior)
        {
            case SplitBehavior.Isolated:
                foreach (var s in stretches) acc.Add((s.Start, s.End));
                break;
            case SplitBehavior.Removed:
                foreach (var s in stretches) if (s.IsMatch == invert) acc.Add((s.Start, s.End));
                break;
            case SplitBehavior.Contiguous:
                foreach (var s in stretches)
                {
                    bool m = s.IsMatch != invert;
                    if (m == prev && acc.Count > 0) acc[^1] = (acc[^1].Start, s.End);
                    else acc.Add((s.Start, s.End));
                    prev = m;
                }
                break;
            case SplitBehavior.MergedWithPrevious:
                foreach (var s in stretches)
                {
                    bool m = s.IsMatch != invert;
                    if (m && !prev && acc.Count > 0) acc[^1] = (acc[^1].Start, s.End);
                    else acc.Add((s.Start, s.End));
                    prev = m;
                }
                break;
            case SplitBehavior.MergedWithNext:
                for (int k = stretches.Count - 1; k >= 0; k--)
                {
                    var s = stretches[k];
                    bool m = s.IsMatch != invert;
                    if (m && !prev && acc.Count > 0) acc[^1] = (s.Start, acc[^1].End);
                    else acc.Add((s.Start, s.End));
                    prev = m;
                }
                acc.Reverse();
                break;
        }
        acc.RemoveAll(r => r.End <= r.Start);
        return acc;
    }

    /// <summary>Rust's <c>char::is_whitespace</c> (Unicode White_Space).</summary>
    public static bool IsWhitespace(Rune r) => Rune.IsWhiteSpace(r) && !(r.Value is >= 0x1C and <= 0x1F);

    /// <summary>Rust's <c>char::is_numeric</c>: Nd, Nl and No.</summary>
    public static bool IsNumeric(Rune r) => Rune.GetUnicodeCategory(r) is UnicodeCategory.DecimalDigitNumber
        or UnicodeCategory.LetterNumber or UnicodeCategory.OtherNumber;

    /// <summary>tokenizers' <c>is_punc</c>: ASCII punctuation (incl. $+&lt;=&gt;^`|~) or a Unicode P* category.</summary>
    public static bool IsPunctuation(Rune r)
    {
        if (r.Value < 128) return r.Value is >= 33 and <= 47 or >= 58 and <= 64 or >= 91 and <= 96 or >= 123 and <= 126;
        return Rune.GetUnicodeCategory(r) is UnicodeCategory.ConnectorPunctuation or UnicodeCategory.DashPunctuation
            or UnicodeCategory.OpenPunctuation or UnicodeCategory.ClosePunctuation or UnicodeCategory.InitialQuotePunctuation
            or UnicodeCategory.FinalQuotePunctuation or UnicodeCategory.OtherPunctuation;
    }
}

/// <summary>
/// A .NET regex that matches code points as the Rust <c>tokenizers</c>' Oniguruma regexes do. .NET matches UTF-16
/// units, so a character outside the BMP (emoji, CJK extension B, math letters) would be two "characters" that
/// are neither letters nor numbers: <c>[^\p{L}]?\p{L}+</c> on "😀abc" would give "😀" + "abc" where the Rust
/// library gives "😀abc". Such code points are therefore replaced, for matching only, by one BMP character of
/// the same Unicode category (every class the tokenizer regexes use is category-based), and match positions
/// are mapped back to the original string.
/// </summary>
internal sealed class UnicodeRegex
{
    private static readonly char[] Stand_in = BuildStandIns();
    private readonly Regex _re;

    public UnicodeRegex(string pattern, string file, string where)
    {
        Pattern = pattern;
        try { _re = new Regex(OnigToDotNet(pattern), RegexOptions.Compiled | RegexOptions.CultureInvariant); }
        catch (ArgumentException e) { throw new FineAlignException($"{file}: {where}: regex is not valid in .NET: {e.Message}", e); }
    }

    public string Pattern { get; }

    public IEnumerable<(int Start, int End)> Matches(string s)
    {
        int firstSurrogate = s.AsSpan().IndexOfAnyInRange('\uD800', '\uDFFF');
        if (firstSurrogate < 0)
        {
            for (var m = _re.Match(s); m.Success; m = m.NextMatch()) yield return (m.Index, m.Index + m.Length);
            yield break;
        }
        // map[i] = index in s of the i-th character of the stand-in string (plus the end).
        var sb = new StringBuilder(s.Length);
        var map = new List<int>(s.Length + 1);
        for (int i = 0; i < s.Length;)
        {
            map.Add(i);
            if (char.IsHighSurrogate(s[i]) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]))
            {
                sb.Append(Stand_in[(int)CharUnicodeInfo.GetUnicodeCategory(char.ConvertToUtf32(s[i], s[i + 1]))]);
                i += 2;
            }
            else sb.Append(s[i++]);
        }
        map.Add(s.Length);
        string t = sb.ToString();
        for (var m = _re.Match(t); m.Success; m = m.NextMatch()) yield return (map[m.Index], map[m.Index + m.Length]);
    }

    /// <summary>
    /// Rewrites the Oniguruma syntax tokenizer regexes use that .NET spells differently: possessive quantifiers
    /// (<c>X?+</c>, <c>X*+</c>, <c>X++</c>, <c>X{m,n}+</c>, e.g. in tiktoken-derived cl100k patterns) become atomic
    /// groups <c>(?&gt;X?)</c>, which mean the same; <c>\w</c> becomes Oniguruma's Unicode word class (letters, all
    /// marks, decimal digits, connector punctuation; .NET's \w lacks the spacing and enclosing marks); <c>\h</c>
    /// (a hex digit in Oniguruma) becomes <c>[0-9a-fA-F]</c>. Everything else is passed through.
    /// </summary>
    private static readonly Regex GroupHead = new(@"^\?(?:<[A-Za-z_][A-Za-z0-9_]*>|[:=!>]|<=|<!|[a-zA-Z]*-?[a-zA-Z]*:)");

    internal static string OnigToDotNet(string p)
    {
        const string Word = @"\p{L}\p{M}\p{Nd}\p{Pc}";
        var sb = new StringBuilder(p.Length + 16);
        int atomStart = -1;  // index in sb where the last complete atom starts
        int i = 0;
        while (i < p.Length)
        {
            char c = p[i];
            if (c == '\\' && i + 1 < p.Length)
            {
                atomStart = sb.Length;
                char n = p[i + 1];
                if (n == 'w') { sb.Append('[').Append(Word).Append(']'); i += 2; continue; }
                if (n == 'W') { sb.Append("[^").Append(Word).Append(']'); i += 2; continue; }
                if (n == 'h') { sb.Append("[0-9a-fA-F]"); i += 2; continue; }
                int end = i + 2;
                if (n is 'p' or 'P' or 'x' && end < p.Length && p[end] == '{') end = p.IndexOf('}', end) is int close and >= 0 ? close + 1 : p.Length;
                else if (n == 'u') end = Math.Min(p.Length, i + 6);
                sb.Append(p, i, end - i);
                i = end;
                continue;
            }
            if (c == '[')
            {
                atomStart = sb.Length;
                int j = i + 1;
                if (j < p.Length && p[j] == '^') j++;
                if (j < p.Length && p[j] == ']') j++;   // a literal ']' first
                var cls = new StringBuilder("[").Append(p, i + 1, j - i - 1);
                while (j < p.Length && p[j] != ']')
                {
                    if (p[j] == '\\' && j + 1 < p.Length)
                    {
                        if (p[j + 1] == 'w') { cls.Append(Word); j += 2; continue; }
                        if (p[j + 1] == 'h') { cls.Append("0-9a-fA-F"); j += 2; continue; }
                        cls.Append(p, j, 2); j += 2; continue;
                    }
                    cls.Append(p[j++]);
                }
                sb.Append(cls).Append(']');
                i = Math.Min(p.Length, j + 1);
                continue;
            }
            if (c == '(')
            {
                // Translate the group's inside recursively, so the whole group is one atom.
                int depth = 0, j = i;
                for (; j < p.Length; j++)
                {
                    if (p[j] == '\\') { j++; continue; }
                    if (p[j] == '[') { j++; if (j < p.Length && p[j] == '^') j++; if (j < p.Length && p[j] == ']') j++; while (j < p.Length && p[j] != ']') { if (p[j] == '\\') j++; j++; } continue; }
                    if (p[j] == '(') depth++;
                    else if (p[j] == ')' && --depth == 0) break;
                }
                if (j >= p.Length) { sb.Append(p, i, p.Length - i); break; }  // unbalanced: let .NET report it
                string inner = p[(i + 1)..j];
                // (?: (?= (?! (?> (?<= (?<! (?<name> (?i: … keep their head; anything else starting with ? passes through.
                string head = GroupHead.Match(inner) is { Success: true } h ? h.Value : "";
                if (head.Length == 0 && inner.StartsWith('?')) { atomStart = sb.Length; sb.Append('(').Append(inner).Append(')'); i = j + 1; continue; }
                atomStart = sb.Length;
                sb.Append('(').Append(head).Append(OnigToDotNet(inner[head.Length..])).Append(')');
                i = j + 1;
                continue;
            }
            if (c is '?' or '*' or '+' or '{' && atomStart >= 0)
            {
                int end = i + 1;
                if (c == '{')
                {
                    int close = p.IndexOf('}', i);
                    if (close < 0) { sb.Append(c); i++; continue; }
                    end = close + 1;
                }
                if (end < p.Length && p[end] == '+')
                {
                    string atom = sb.ToString(atomStart, sb.Length - atomStart);
                    sb.Length = atomStart;
                    sb.Append("(?>").Append(atom).Append(p, i, end - i).Append(')');
                    i = end + 1;
                }
                else
                {
                    sb.Append(p, i, end - i);
                    i = end;
                    if (i < p.Length && p[i] == '?') sb.Append(p[i++]);   // lazy quantifier
                }
                atomStart = -1;
                continue;
            }
            atomStart = c is '|' or '^' or '$' ? -1 : sb.Length;
            sb.Append(c);
            i++;
        }
        return sb.ToString();
    }

    // For each category, the last BMP character with it (far from ASCII, so the patterns' literal letters and
    // case-insensitive groups cannot match a stand-in).
    private static char[] BuildStandIns()
    {
        var result = new char[32];
        for (int c = 0xFFFD; c > 0x7F; c--)
        {
            if (c is >= 0xD800 and <= 0xDFFF) continue;
            int cat = (int)CharUnicodeInfo.GetUnicodeCategory((char)c);
            if (result[cat] == '\0') result[cat] = (char)c;
        }
        return result;
    }
}
