namespace FineAlign.Text;

/// <summary>
/// GPT-2's reversible byte ↔ printable-character map (<c>bytes_to_unicode</c> in openai/gpt-2 encoder.py):
/// printable Latin-1 bytes map to themselves, the other 68 bytes to U+0100.. in order. Byte-level BPE
/// vocabularies (vocab.json, tokenizer.json) spell tokens with these characters, e.g. space = 'Ġ'.
/// </summary>
public static class ByteLevel
{
    private static readonly char[] ByteToChar = Build();
    private static readonly Dictionary<char, byte> CharToByte =
        Enumerable.Range(0, 256).ToDictionary(b => ByteToChar[b], b => (byte)b);

    /// <summary>The character that spells byte <paramref name="b"/>.</summary>
    public static char CharOf(byte b) => ByteToChar[b];

    /// <summary>The byte spelled by <paramref name="c"/>, or null if c is not one of the 256 characters.</summary>
    public static byte? ByteOf(char c) => CharToByte.TryGetValue(c, out byte b) ? b : null;

    /// <summary>GPT-2's pre-tokenizer pattern (words, numbers, punctuation runs, whitespace).</summary>
    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    private static char[] Build()
    {
        var printable = new List<int>();
        for (int i = '!'; i <= '~'; i++) printable.Add(i);
        for (int i = 0xA1; i <= 0xAC; i++) printable.Add(i);
        for (int i = 0xAE; i <= 0xFF; i++) printable.Add(i);
        var map = new char[256];
        foreach (int b in printable) map[b] = (char)b;
        int next = 0;
        for (int b = 0; b < 256; b++)
            if (!printable.Contains(b)) map[b] = (char)(256 + next++);
        return map;
    }
}
