using System.Globalization;
using System.Text;

namespace FineAlign.Text.Jinja;

public enum TokenKind { Data, VarBegin, VarEnd, BlockBegin, BlockEnd, Name, String, Integer, Float, Operator, Eof }

public readonly record struct Token(TokenKind Kind, string Value, int Line, int Column)
{
    public bool Is(TokenKind k, string v) => Kind == k && Value == v;
    public override string ToString() => Kind switch
    {
        TokenKind.Eof => "end of template",
        TokenKind.Data => "template text",
        TokenKind.String => $"string '{Value}'",
        _ => $"'{Value}'",
    };
}

/// <summary>
/// Splits a template into text and tag tokens with the whitespace rules transformers uses:
/// <c>trim_blocks</c> (the first newline after a block or comment tag is dropped), <c>lstrip_blocks</c>
/// (spaces and tabs before a block or comment tag at the start of a line are dropped, unless the tag opens with
/// <c>+</c>), <c>-</c> on either side of a tag strips all whitespace on that side, and one trailing newline of the
/// source is dropped (Jinja2's keep_trailing_newline=False). <c>{% raw %}</c> content is text.
/// </summary>
public static class JinjaLexer
{
    private static readonly string[] Operators =
        ["//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<", ">", "=", "(", ")", "[", "]", "{", "}", ",", ".", ":", "|"];

    public static List<Token> Tokenize(string source, bool trimBlocks = true, bool lstripBlocks = true)
    {
        source = source.Replace("\r\n", "\n").Replace('\r', '\n');
        if (source.EndsWith('\n')) source = source[..^1];
        var tokens = new List<Token>();
        int pos = 0, line = 1, lineStart = 0;
        bool stripNextText = false;   // a '-' before the previous tag's end
        bool trimNextNewline = false; // trim_blocks after a block/comment tag

        void Advance(int to)
        {
            for (int i = pos; i < to; i++) if (source[i] == '\n') { line++; lineStart = i + 1; }
            pos = to;
        }

        while (pos < source.Length)
        {
            int open = FindTagOpen(source, pos);
            int textEnd = open < 0 ? source.Length : open;
            string text = source[pos..textEnd];
            char kind = open < 0 ? '\0' : source[open + 1];
            char modifier = open >= 0 && open + 2 < source.Length ? source[open + 2] : '\0';

            if (trimNextNewline && text.StartsWith('\n')) text = text[1..];
            if (stripNextText) text = text.TrimStart();
            if (open >= 0)
            {
                if (modifier == '-') text = text.TrimEnd();
                else if (lstripBlocks && kind is '%' or '#' && modifier != '+')
                {
                    // Only when the tag is the first non-blank thing on its line (judged on the source).
                    int k = textEnd;
                    while (k > pos && source[k - 1] is ' ' or '\t') k--;
                    int blanks = textEnd - k;
                    if ((k == 0 || source[k - 1] == '\n') && blanks > 0 && text.Length >= blanks) text = text[..^blanks];
                }
            }
            if (text.Length > 0) tokens.Add(new Token(TokenKind.Data, text, line, pos - lineStart + 1));
            stripNextText = false; trimNextNewline = false;
            if (open < 0) { Advance(source.Length); break; }
            Advance(open);
            int tagLine = line, tagCol = pos - lineStart + 1;
            int inner = open + 2 + (modifier is '-' or '+' ? 1 : 0);

            if (kind == '#')
            {
                int close = source.IndexOf("#}", inner, StringComparison.Ordinal);
                if (close < 0) throw new JinjaException("comment '{#' is never closed with '#}'", tagLine, tagCol);
                stripNextText = close > inner && source[close - 1] == '-';
                trimNextNewline = trimBlocks;
                Advance(close + 2);
                continue;
            }

            var begin = kind == '{' ? TokenKind.VarBegin : TokenKind.BlockBegin;
            string closer = kind == '{' ? "}}" : "%}";
            tokens.Add(new Token(begin, kind == '{' ? "{{" : "{%", tagLine, tagCol));
            Advance(inner);
            int firstTagToken = tokens.Count;
            while (true)
            {
                while (pos < source.Length && char.IsWhiteSpace(source[pos])) Advance(pos + 1);
                if (pos >= source.Length) throw new JinjaException($"tag '{(kind == '{' ? "{{" : "{%")}' is never closed with '{closer}'", tagLine, tagCol);
                bool dash = source[pos] == '-' && string.CompareOrdinal(source, pos + 1, closer, 0, 2) == 0;
                bool plus = source[pos] == '+' && begin == TokenKind.BlockBegin && string.CompareOrdinal(source, pos + 1, closer, 0, 2) == 0;
                if (dash || plus || string.CompareOrdinal(source, pos, closer, 0, 2) == 0)
                {
                    tokens.Add(new Token(begin == TokenKind.VarBegin ? TokenKind.VarEnd : TokenKind.BlockEnd, closer, line, pos - lineStart + 1));
                    Advance(pos + (dash || plus ? 3 : 2));
                    stripNextText = dash;
                    trimNextNewline = trimBlocks && begin == TokenKind.BlockBegin && !plus;   // "+%}" keeps the newline
                    break;
                }
                tokens.Add(LexOne(source, ref pos, line, pos - lineStart + 1));
            }

            // {% raw %} ... {% endraw %}: everything between is text.
            if (begin == TokenKind.BlockBegin && tokens.Count == firstTagToken + 2 && tokens[firstTagToken].Is(TokenKind.Name, "raw"))
            {
                tokens.RemoveRange(firstTagToken - 1, 3);
                int end = FindEndRaw(source, pos, out int after, out bool dashBefore, out bool dashAfter);
                if (end < 0) throw new JinjaException("'{% raw %}' is never closed with '{% endraw %}'", tagLine, tagCol);
                string raw = source[pos..end];
                if (stripNextText) raw = raw.TrimStart();
                else if (trimNextNewline && raw.StartsWith('\n')) raw = raw[1..];
                if (dashBefore) raw = raw.TrimEnd();
                else if (lstripBlocks)
                {
                    int k = raw.Length;
                    while (k > 0 && raw[k - 1] is ' ' or '\t') k--;
                    if (k == 0 || raw[k - 1] == '\n') raw = raw[..k];
                }
                if (raw.Length > 0) tokens.Add(new Token(TokenKind.Data, raw, line, pos - lineStart + 1));
                Advance(after);
                stripNextText = dashAfter;
                trimNextNewline = trimBlocks;
            }
        }
        tokens.Add(new Token(TokenKind.Eof, "", line, pos - lineStart + 1));
        return tokens;
    }


    private static int FindTagOpen(string s, int from)
    {
        for (int i = s.IndexOf('{', from); i >= 0 && i + 1 < s.Length; i = s.IndexOf('{', i + 1))
            if (s[i + 1] is '{' or '%' or '#') return i;
        return -1;
    }

    private static int FindEndRaw(string s, int from, out int after, out bool dashBefore, out bool dashAfter)
    {
        for (int i = s.IndexOf("{%", from, StringComparison.Ordinal); i >= 0; i = s.IndexOf("{%", i + 2, StringComparison.Ordinal))
        {
            int j = i + 2;
            dashBefore = j < s.Length && s[j] == '-';
            if (j < s.Length && s[j] is '-' or '+') j++;
            while (j < s.Length && char.IsWhiteSpace(s[j])) j++;
            if (string.CompareOrdinal(s, j, "endraw", 0, 6) != 0) continue;
            j += 6;
            while (j < s.Length && char.IsWhiteSpace(s[j])) j++;
            dashAfter = j < s.Length && s[j] == '-';
            if (dashAfter) j++;
            if (string.CompareOrdinal(s, j, "%}", 0, 2) != 0) continue;
            after = j + 2;
            return i;
        }
        after = 0; dashBefore = dashAfter = false;
        return -1;
    }

    private static Token LexOne(string s, ref int pos, int line, int col)
    {
        char c = s[pos];
        if (char.IsLetter(c) || c == '_')
        {
            int st = pos;
            while (pos < s.Length && (char.IsLetterOrDigit(s[pos]) || s[pos] == '_')) pos++;
            return new Token(TokenKind.Name, s[st..pos], line, col);
        }
        if (char.IsDigit(c))
        {
            int st = pos;
            while (pos < s.Length && (char.IsDigit(s[pos]) || s[pos] == '_')) pos++;
            bool isFloat = false;
            if (pos + 1 < s.Length && s[pos] == '.' && char.IsDigit(s[pos + 1]))
            {
                isFloat = true; pos++;
                while (pos < s.Length && (char.IsDigit(s[pos]) || s[pos] == '_')) pos++;
            }
            if (pos < s.Length && s[pos] is 'e' or 'E' && pos + 1 < s.Length && (char.IsDigit(s[pos + 1]) || (s[pos + 1] is '+' or '-' && pos + 2 < s.Length && char.IsDigit(s[pos + 2]))))
            {
                isFloat = true; pos += 2;
                while (pos < s.Length && char.IsDigit(s[pos])) pos++;
            }
            return new Token(isFloat ? TokenKind.Float : TokenKind.Integer, s[st..pos].Replace("_", ""), line, col);
        }
        if (c is '\'' or '"')
        {
            var sb = new StringBuilder();
            int i = pos + 1;
            while (true)
            {
                if (i >= s.Length) throw new JinjaException("string literal is never closed", line, col);
                char ch = s[i];
                if (ch == c) { i++; break; }
                if (ch == '\\' && i + 1 < s.Length)
                {
                    char e = s[i + 1];
                    i += 2;
                    switch (e)
                    {
                        case 'n': sb.Append('\n'); break;
                        case 't': sb.Append('\t'); break;
                        case 'r': sb.Append('\r'); break;
                        case '\\': sb.Append('\\'); break;
                        case '\'': sb.Append('\''); break;
                        case '"': sb.Append('"'); break;
                        case '0': sb.Append('\0'); break;
                        case 'b': sb.Append('\b'); break;
                        case 'f': sb.Append('\f'); break;
                        case 'v': sb.Append('\v'); break;
                        case 'a': sb.Append('\a'); break;
                        case '\n': break;   // line continuation
                        case 'x' when i + 2 <= s.Length:
                            sb.Append((char)int.Parse(s.AsSpan(i, 2), NumberStyles.HexNumber)); i += 2; break;
                        case 'u' when i + 4 <= s.Length:
                            sb.Append((char)int.Parse(s.AsSpan(i, 4), NumberStyles.HexNumber)); i += 4; break;
                        case 'U' when i + 8 <= s.Length:
                            sb.Append(char.ConvertFromUtf32(int.Parse(s.AsSpan(i, 8), NumberStyles.HexNumber))); i += 8; break;
                        default: sb.Append('\\').Append(e); break;   // Python keeps unknown escapes
                    }
                    continue;
                }
                sb.Append(ch);
                i++;
            }
            pos = i;
            return new Token(TokenKind.String, sb.ToString(), line, col);
        }
        foreach (var op in Operators)
            if (string.CompareOrdinal(s, pos, op, 0, op.Length) == 0)
            {
                pos += op.Length;
                return new Token(TokenKind.Operator, op, line, col);
            }
        throw new JinjaException($"unexpected character '{c}'", line, col);
    }
}
