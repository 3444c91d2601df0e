using System.Text;

namespace FineAlign.Text.Pipeline;

/// <summary>
/// A piece of the text on its way through the pipeline: either an added token already resolved to its id
/// (<see cref="Id"/> ≥ 0), or text still to be pre-tokenised and modelled. <see cref="AtStart"/> says the piece
/// begins at offset 0 of the original text (Metaspace's <c>prepend_scheme: "first"</c> needs it).
/// </summary>
internal readonly record struct Piece(string Text, int Id, bool AtStart)
{
    public bool IsToken => Id >= 0;
}

/// <summary>A tokenizer.json <c>pre_tokenizer</c>: cuts each text piece into the words the model sees.</summary>
internal abstract class PreTokenizer
{
    /// <summary>Splits one text piece; pieces appended to <paramref name="output"/> must not be empty.</summary>
    protected abstract void Split(string text, bool atStart, List<Piece> output);

    public virtual List<Piece> Apply(List<Piece> pieces)
    {
        var output = new List<Piece>(pieces.Count * 2);
        foreach (var p in pieces)
        {
            if (p.IsToken) output.Add(p);
            else if (p.Text.Length > 0) Split(p.Text, p.AtStart, output);
        }
        return output;
    }

    protected static void AddRanges(string text, bool atStart, List<(int Start, int End)> ranges, List<Piece> output)
    {
        foreach (var (s, e) in ranges)
            output.Add(new Piece(s == 0 && e == text.Length ? text : text[s..e], -1, atStart && s == 0));
    }

    public static PreTokenizer Parse(JsonFields f)
    {
        string type = f.Type;
        switch (type)
        {
            case "ByteLevel":
                return new ByteLevelPre(f.Bool("add_prefix_space", true), f.Bool("use_regex", true), f);
            case "Metaspace":
                string repl = f.Char("replacement", "\u2581");
                string scheme = f.OptString("prepend_scheme")
                    ?? (f.Bool("add_prefix_space", true) ? "always" : "never");
                if (scheme is not ("always" or "first" or "never"))
                    throw f.Fail("prepend_scheme", $"unknown prepend_scheme '{scheme}' (expected always, first or never)");
                return new Metaspace(repl, scheme, f.Bool("split", true));
            case "Split":
                if (!f.Has("behavior")) throw f.Fail("behavior", "missing (expected Removed, Isolated, MergedWithPrevious, MergedWithNext or Contiguous)");
                return new SplitPre(TextPattern.Parse(f, "pattern"), Splitting.ParseBehavior(f, "behavior", SplitBehavior.Isolated), f.Bool("invert", false));
            case "Whitespace": return new RegexPre(WhitespaceRegex(f), SplitBehavior.Removed, invert: true);
            case "WhitespaceSplit": return new CharPre(Splitting.IsWhitespace, SplitBehavior.Removed);
            case "Punctuation": return new CharPre(Splitting.IsPunctuation, Splitting.ParseBehavior(f, "behavior", SplitBehavior.Isolated));
            case "Digits":
                return new CharPre(Splitting.IsNumeric, f.Bool("individual_digits", false) ? SplitBehavior.Isolated : SplitBehavior.Contiguous);
            case "BertPreTokenizer":
                return new Sequence([new CharPre(Splitting.IsWhitespace, SplitBehavior.Removed), new CharPre(Splitting.IsPunctuation, SplitBehavior.Isolated)]);
            case "CharDelimiterSplit":
                string d = f.Char("delimiter", "");
                return new CharPre(r => r.ToString() == d, SplitBehavior.Removed);
            case "FixedLength":
                int len = f.Int("length", 5);
                return len > 0 ? new FixedLength(len) : throw f.Fail("length", "must be positive");
            case "Sequence":
                var items = new List<PreTokenizer>();
                int i = 0;
                foreach (var e in f.Array("pretokenizers").EnumerateArray())
                    items.Add(Parse(new JsonFields(f.File, f.Path($"pretokenizers[{i++}]"), e)));
                return new Sequence(items);
            case "UnicodeScripts":
                throw f.Fail("pre-tokenizer 'UnicodeScripts' is not supported");
            default:
                throw f.Fail($"unknown pre-tokenizer type '{type}' (supported: ByteLevel, Metaspace, Split, Whitespace, WhitespaceSplit, " +
                             "Punctuation, Digits, BertPreTokenizer, CharDelimiterSplit, FixedLength, Sequence)");
        }
    }

    // The Rust regex crate's Unicode \w (Alphabetic, marks, decimal digits, connector punctuation, joiners).
    private const string Word = @"\p{L}\p{Nl}\p{M}\p{Nd}\p{Pc}\u200C\u200D\u24B6-\u24E9";
    private static UnicodeRegex WhitespaceRegex(JsonFields f) => new($"[{Word}]+|[^{Word}\\s]+", f.File, f.Where);

    /// <summary>GPT-2's byte ↔ character map applied to the UTF-8 bytes of <paramref name="s"/>.</summary>
    public static string ToByteLevel(string s)
    {
        bool ascii = true;
        foreach (char c in s) if (c >= 0x80) { ascii = false; break; }
        if (ascii)
        {
            return string.Create(s.Length, s, static (span, src) =>
            {
                for (int i = 0; i < src.Length; i++) span[i] = ByteLevel.CharOf((byte)src[i]);
            });
        }
        byte[] bytes = Encoding.UTF8.GetBytes(s);
        return string.Create(bytes.Length, bytes, static (span, b) =>
        {
            for (int i = 0; i < b.Length; i++) span[i] = ByteLevel.CharOf(b[i]);
        });
    }

    private sealed class ByteLevelPre(bool addPrefixSpace, bool useRegex, JsonFields f) : PreTokenizer
    {
        private readonly UnicodeRegex? _re = useRegex ? new UnicodeRegex(ByteLevel.Gpt2Pattern, f.File, f.Where) : null;

        protected override void Split(string text, bool atStart, List<Piece> output)
        {
            if (addPrefixSpace && !text.StartsWith(' ')) text = " " + text;
            if (_re is null) { output.Add(new Piece(ToByteLevel(text), -1, atStart)); return; }
            foreach (var (s, e) in Splitting.Apply(Splitting.FindRegex(text, _re), SplitBehavior.Isolated, false))
                output.Add(new Piece(ToByteLevel(text[s..e]), -1, atStart && s == 0));
        }
    }

    private sealed class Metaspace(string replacement, string scheme, bool split) : PreTokenizer
    {
        private readonly Rune _rep = Rune.GetRuneAt(replacement, 0);

        protected override void Split(string text, bool atStart, List<Piece> output)
        {
            text = text.Replace(" ", replacement, StringComparison.Ordinal);
            if (!text.StartsWith(replacement, StringComparison.Ordinal) && (scheme == "always" || (scheme == "first" && atStart)))
                text = replacement + text;
            if (!split) { output.Add(new Piece(text, -1, atStart)); return; }
            AddRanges(text, atStart, Splitting.Apply(Splitting.FindChars(text, r => r == _rep), SplitBehavior.MergedWithNext, false), output);
        }
    }

    private sealed class SplitPre(TextPattern pattern, SplitBehavior behavior, bool invert) : PreTokenizer
    {
        protected override void Split(string text, bool atStart, List<Piece> output) =>
            AddRanges(text, atStart, Splitting.Apply(pattern.Find(text), behavior, invert), output);
    }

    private sealed class RegexPre(UnicodeRegex re, SplitBehavior behavior, bool invert) : PreTokenizer
    {
        protected override void Split(string text, bool atStart, List<Piece> output) =>
            AddRanges(text, atStart, Splitting.Apply(Splitting.FindRegex(text, re), behavior, invert), output);
    }

    private sealed class CharPre(Func<Rune, bool> pred, SplitBehavior behavior) : PreTokenizer
    {
        protected override void Split(string text, bool atStart, List<Piece> output) =>
            AddRanges(text, atStart, Splitting.Apply(Splitting.FindChars(text, pred), behavior, false), output);
    }

    private sealed class FixedLength(int length) : PreTokenizer
    {
        protected override void Split(string text, bool atStart, List<Piece> output)
        {
            int start = 0, count = 0, i = 0;
            while (i < text.Length)
            {
                i += char.IsSurrogatePair(text, i) ? 2 : 1;
                if (++count == length) { output.Add(new Piece(text[start..i], -1, atStart && start == 0)); start = i; count = 0; }
            }
            if (start < text.Length) output.Add(new Piece(text[start..], -1, atStart && start == 0));
        }
    }

    private sealed class Sequence(List<PreTokenizer> items) : PreTokenizer
    {
        protected override void Split(string text, bool atStart, List<Piece> output) =>
            output.AddRange(Apply([new Piece(text, -1, atStart)]));

        public override List<Piece> Apply(List<Piece> pieces)
        {
            foreach (var p in items) pieces = p.Apply(pieces);
            return pieces;
        }
    }
}
