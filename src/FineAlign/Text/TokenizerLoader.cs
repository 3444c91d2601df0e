namespace FineAlign.Text;

/// <summary>Picks the tokenizer implementation for a folder of tokenizer files.</summary>
public static class TokenizerLoader
{
    private static readonly string[] KnownFiles =
        ["tokenizer.json", "tokenizer.model", "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"];

    /// <summary>
    /// Order: a FineAlign byte tokenizer (marker in tokenizer_config.json) → tokenizer.model (SentencePiece)
    /// → tokenizer.json (byte-level BPE) → vocab.json + merges.txt. When tokenizer.json is unsupported and
    /// no other files exist, its error (naming the model type) is reported.
    /// </summary>
    public static TextTokenizer Load(string folder)
    {
        // Callers pass a model folder as often as a tokenizer folder: say "folder", not "tokenizer folder".
        if (!Directory.Exists(folder))
            throw new FineAlignException(File.Exists(folder)
                ? $"{folder}: is a file, expected a model or tokenizer folder"
                : $"{folder}: folder not found (expected a model or tokenizer folder)");
        // A tokenizer file that is a device or FIFO (or a link to one) would be read forever; refuse it by name.
        foreach (string name in KnownFiles)
            if (File.Exists(Path.Combine(folder, name))) InputFile.RequireRegular(Path.Combine(folder, name));
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
