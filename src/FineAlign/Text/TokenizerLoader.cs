namespace FineAlign.Text;

/// <summary>Picks the tokenizer implementation for a folder of tokenizer files.</summary>
public static class TokenizerLoader
{
    /// <summary>
    /// Order: a FineAlign byte tokenizer (marker in tokenizer_config.json) → tokenizer.model (SentencePiece)
    /// → tokenizer.json (byte-level BPE) → vocab.json + merges.txt. When tokenizer.json is unsupported and
    /// no other files exist, its error (naming the model type) is reported.
    /// </summary>
    public static TextTokenizer Load(string folder)
    {
        if (!Directory.Exists(folder)) throw new FineAlignException($"tokenizer folder '{folder}' does not exist");
        var config = TokenizerSettings.ReadObject(Path.Combine(folder, "tokenizer_config.json"));
        if (TokenizerSettings.TokenString(config?[ByteTokenizer.ConfigMarkerKey]) == "byte")
            return ByteTokenizer.Load(folder);

        if (File.Exists(Path.Combine(folder, "tokenizer.model")))
            return HfTokenizer.LoadSentencePiece(folder);

        bool hasVocabMerges = File.Exists(Path.Combine(folder, "vocab.json")) && File.Exists(Path.Combine(folder, "merges.txt"));
        if (File.Exists(Path.Combine(folder, "tokenizer.json")))
        {
            try { return HfTokenizer.LoadTokenizerJson(folder); }
            catch (FineAlignException) when (hasVocabMerges) { /* fall back to vocab.json + merges.txt */ }
        }
        if (hasVocabMerges) return HfTokenizer.LoadVocabMerges(folder);

        throw new FineAlignException(
            $"no tokenizer found in '{folder}': looked for tokenizer.model (SentencePiece), tokenizer.json (byte-level BPE) " +
            "and vocab.json + merges.txt (GPT-2 BPE)");
    }
}
