using System.Text;

namespace FineAlign.Text.Pipeline;

/// <summary>A tokenizer.json <c>decoder</c>: turns token strings back into text (tokenizers' decode_chain, then concatenation).</summary>
internal abstract class Decoder
{
    public abstract List<string> DecodeChain(List<string> tokens);

    public static Decoder Parse(JsonFields f)
    {
        string type = f.Type;
        switch (type)
        {
            case "ByteLevel": return new ByteLevelDec();
            case "Metaspace":
                string repl = f.Char("replacement", "\u2581");
                string scheme = f.OptString("prepend_scheme") ?? (f.Bool("add_prefix_space", true) ? "always" : "never");
                if (scheme is not ("always" or "first" or "never"))
                    throw f.Fail("prepend_scheme", $"unknown prepend_scheme '{scheme}' (expected always, first or never)");
                return new Metaspace(Rune.GetRuneAt(repl, 0), scheme != "never");
            case "ByteFallback": return new ByteFallback();
            case "Fuse": return new Fuse();
            case "Strip":
                return new Strip(Rune.GetRuneAt(f.Char("content", " "), 0), f.Int("start", 0), f.Int("stop", 0));
            case "Replace": return new Replace(TextPattern.Parse(f, "pattern"), f.String("content"));
            case "WordPiece": return new WordPieceDec(f.OptString("prefix") ?? "##", f.Bool("cleanup", true));
            case "BPEDecoder": return new BpeDec(f.OptString("suffix") ?? "</w>");
            case "Sequence":
                var items = new List<Decoder>();
                int i = 0;
                foreach (var e in f.Array("decoders").EnumerateArray())
                    items.Add(Parse(new JsonFields(f.File, f.Path($"decoders[{i++}]"), e)));
                return new Sequence(items);
            case "CTC": throw f.Fail("decoder 'CTC' (speech models) is not supported");
            default:
                throw f.Fail($"unknown decoder type '{type}' (supported: ByteLevel, Metaspace, ByteFallback, Fuse, Strip, Replace, WordPiece, BPEDecoder, Sequence)");
        }
    }

    /// <summary>All tokens' byte-level characters back to bytes (a token with other characters contributes its UTF-8), one lossy UTF-8 string.</summary>
    private sealed class ByteLevelDec : Decoder
    {
        public override List<string> DecodeChain(List<string> tokens)
        {
            var bytes = new List<byte>();
            foreach (string t in tokens)
            {
                int mark = bytes.Count;
                bool ok = true;
                foreach (char c in t)
                {
                    if (ByteLevel.ByteOf(c) is byte b) bytes.Add(b);
                    else { ok = false; break; }
                }
                if (!ok) { bytes.RemoveRange(mark, bytes.Count - mark); bytes.AddRange(Encoding.UTF8.GetBytes(t)); }
            }
            return [Encoding.UTF8.GetString(bytes.ToArray())];
        }
    }

    private sealed class Metaspace(Rune replacement, bool stripFirst) : Decoder
    {
        public override List<string> DecodeChain(List<string> tokens)
        {
            var result = new List<string>(tokens.Count);
            for (int i = 0; i < tokens.Count; i++)
            {
                var sb = new StringBuilder(tokens[i].Length);
                foreach (Rune r in tokens[i].EnumerateRunes())
                {
                    if (r != replacement) sb.Append(r.ToString());
                    else if (!(i == 0 && stripFirst)) sb.Append(' ');
                }
                result.Add(sb.ToString());
            }
            return result;
        }
    }

    /// <summary>Runs of &lt;0xNN&gt; tokens become their bytes; an invalid UTF-8 run becomes one U+FFFD per byte.</summary>
    private sealed class ByteFallback : Decoder
    {
        private static readonly UTF8Encoding Strict = new(false, throwOnInvalidBytes: true);

        public override List<string> DecodeChain(List<string> tokens)
        {
            var result = new List<string>(tokens.Count);
            var run = new List<byte>();
            void Flush()
            {
                if (run.Count == 0) return;
                try { result.Add(Strict.GetString(run.ToArray())); }
                catch (DecoderFallbackException) { for (int k = 0; k < run.Count; k++) result.Add("\uFFFD"); }
                run.Clear();
            }
            foreach (string t in tokens)
            {
                if (t.Length == 6 && t.StartsWith("<0x", StringComparison.Ordinal) && t[5] == '>'
                    && byte.TryParse(t.AsSpan(3, 2), System.Globalization.NumberStyles.AllowHexSpecifier, null, out byte b))
                    run.Add(b);
                else { Flush(); result.Add(t); }
            }
            Flush();
            return result;
        }
    }

    private sealed class Fuse : Decoder
    {
        public override List<string> DecodeChain(List<string> tokens) => [string.Concat(tokens)];
    }

    /// <summary>Removes up to <c>start</c> leading and <c>stop</c> trailing <c>content</c> characters of every token.</summary>
    private sealed class Strip(Rune content, int start, int stop) : Decoder
    {
        public override List<string> DecodeChain(List<string> tokens)
        {
            var result = new List<string>(tokens.Count);
            foreach (string t in tokens)
            {
                var runes = t.EnumerateRunes().ToList();
                int from = 0, to = runes.Count;
                for (int i = 0; i < Math.Min(start, runes.Count) && runes[i] == content; i++) from = i + 1;
                for (int i = 0; i < stop && runes.Count - i - 1 >= 0 && runes[runes.Count - i - 1] == content; i++) to = runes.Count - i - 1;
                result.Add(from >= to ? "" : string.Concat(runes.Skip(from).Take(to - from).Select(r => r.ToString())));
            }
            return result;
        }
    }

    private sealed class Replace(TextPattern pattern, string content) : Decoder
    {
        public override List<string> DecodeChain(List<string> tokens) => tokens.Select(t => pattern.ReplaceAll(t, content)).ToList();
    }

    private sealed class WordPieceDec(string prefix, bool cleanup) : Decoder
    {
        public override List<string> DecodeChain(List<string> tokens)
        {
            var result = new List<string>(tokens.Count);
            for (int i = 0; i < tokens.Count; i++)
            {
                string t = tokens[i];
                if (i != 0) t = t.StartsWith(prefix, StringComparison.Ordinal) ? t[prefix.Length..] : " " + t;
                if (cleanup)
                    t = t.Replace(" .", ".").Replace(" ?", "?").Replace(" !", "!").Replace(" ,", ",").Replace(" ' ", "'")
                        .Replace(" n't", "n't").Replace(" 'm", "'m").Replace(" do not", " don't").Replace(" 's", "'s")
                        .Replace(" 've", "'ve").Replace(" 're", "'re");
                result.Add(t);
            }
            return result;
        }
    }

    private sealed class BpeDec(string suffix) : Decoder
    {
        public override List<string> DecodeChain(List<string> tokens) =>
            tokens.Select((t, i) => t.Replace(suffix, i == tokens.Count - 1 ? "" : " ")).ToList();
    }

    private sealed class Sequence(List<Decoder> items) : Decoder
    {
        public override List<string> DecodeChain(List<string> tokens)
        {
            foreach (var d in items) tokens = d.DecodeChain(tokens);
            return tokens;
        }
    }
}
