using FineAlign.Text;
using System.Text;

namespace FineAlign.Data;

/// <summary>
/// Plain text for pretraining: a .txt file whose documents are separated by blank lines, or a .jsonl
/// file with a <c>text</c> field per line. Documents become [BOS] text EOS and are packed into blocks.
/// </summary>
public static class PretrainCorpus
{
    /// <summary>Streams the documents of <paramref name="path"/> (.jsonl/.json → 'text' field; else blank-line separated text).</summary>
    public static IEnumerable<string> ReadDocuments(string path)
    {
        if (!File.Exists(path)) throw new FineAlignException($"{path}: file not found");
        string ext = Path.GetExtension(path).ToLowerInvariant();
        return ext is ".jsonl" or ".json" ? ReadJsonl(path) : ReadText(path);
    }

    private static IEnumerable<string> ReadJsonl(string path)
    {
        foreach (var line in JsonlReader.Read(path))
        {
            string text = line.RequireString(path, "text");
            if (text.Length > 0) yield return text;
        }
    }

    private static IEnumerable<string> ReadText(string path)
    {
        using var reader = new StreamReader(path, new UTF8Encoding(false, throwOnInvalidBytes: true));
        var doc = new StringBuilder();
        long lineNo = 0;
        while (true)
        {
            string? line;
            // The decoder works on 4 KB chunks, so the reported line is where reading stopped, near the bad byte.
            try { line = reader.ReadLine(); }
            catch (DecoderFallbackException) { throw new FineAlignException($"{path}: not valid UTF-8 text (bad bytes near line {lineNo + 1})"); }
            if (line is null) break;
            lineNo++;
            if (line.Trim().Length == 0)
            {
                if (doc.Length > 0) { yield return doc.ToString(); doc.Clear(); }
                continue;
            }
            if (doc.Length > 0) doc.Append('\n');
            doc.Append(line);
        }
        if (doc.Length > 0) yield return doc.ToString();
    }

    /// <summary>One document as [BOS] text EOS; every token but the first is a target.</summary>
    public static TokenizedExample EncodeDocument(Text.TextTokenizer tokenizer, string text)
    {
        var ids = new List<int>();
        if (tokenizer.AddBos && tokenizer.BosId is int bos) ids.Add(bos);
        ids.AddRange(tokenizer.Encode(text));
        int eos = tokenizer.EosId ?? throw new FineAlignException("the tokenizer has no EOS token; pretraining needs one between documents");
        ids.Add(eos);
        var mask = Enumerable.Repeat(true, ids.Count).ToArray();
        mask[0] = false;
        return new TokenizedExample(ids.ToArray(), mask);
    }

    /// <summary>Reads, tokenizes and packs the corpus into blocks of <paramref name="contextLength"/> tokens (remainder dropped).</summary>
    public static List<TokenizedExample> LoadBlocks(string path, Text.TextTokenizer tokenizer, int contextLength)
    {
        int eos = tokenizer.EosId ?? throw new FineAlignException("the tokenizer has no EOS token; pretraining needs one between documents");
        var blocks = Packing.Pack(ReadDocuments(path).Select(d => EncodeDocument(tokenizer, d)), contextLength, eos);
        if (blocks.Count == 0)
            throw new FineAlignException($"{path}: the corpus has fewer than {contextLength} tokens, not one full block");
        return blocks;
    }
}
