using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using FineAlign.Data;
using FineAlign.Data.Corpus;
using FineAlign.Text;

namespace FineAlign.Cli.Commands;

/// <summary><c>finealign tokenizer train</c>: a byte-level BPE tokenizer learned from text, in Hugging Face's format.</summary>
public static class TokenizerTrainCommand
{
    /// <summary>The <c>tokenizer</c> group (one sub-command today: <c>train</c>).</summary>
    public static Command CreateGroup()
    {
        var group = new Command("tokenizer", "Tokenizer tools. `finealign tokenizer train` learns a byte-level BPE tokenizer from text.");
        group.Add(Create());
        return group;
    }

    public static RecipeCommand Create()
    {
        var cmd = new RecipeCommand("train",
            "Learns a byte-level BPE tokenizer (GPT-2 style: GPT-2 regex split, every byte in the vocabulary, so any text encodes) from text and " +
            "writes tokenizer.json + tokenizer_config.json + special_tokens_map.json, which transformers' AutoTokenizer and FineAlign load. " +
            "Deterministic: the same text and --vocab-size give identical files. Use it for a model trained from scratch: " +
            "finealign pretrain --tokenizer DIR.");
        var data = cmd.Declare<string?>("--data", null, "Training text: .txt (documents separated by blank lines) or .jsonl with a 'text' field. Omitted: the built-in review corpus.");
        var vocabSize = cmd.Declare("--vocab-size", 1024, "Vocabulary size including the 5 special tokens and the 256 bytes (training stops earlier if no pair occurs twice).",
            check: v => v >= 261 ? null : "must be at least 261 (5 special tokens + 256 bytes)");
        var outDir = cmd.Declare("--out", "runs/tokenizer", "Output folder for the tokenizer files.", alias: "-o");
        var corpusSize = cmd.Declare("--corpus-size", 8000, "Reviews of the built-in corpus used when --data is omitted.", check: v => v >= 10 ? null : "must be at least 10");
        var corpusSeed = cmd.Declare("--corpus-seed", 1234, "Seed of the built-in corpus.");
        cmd.SetRecipeAction((r, ct) =>
        {
            var texts = r.Get(data) is string path
                ? PretrainCorpus.ReadDocuments(path)
                : ReviewCorpus.Generate(r.Get(corpusSeed), r.Get(corpusSize)).Select(x => x.Text);
            var clock = Stopwatch.StartNew();
            var model = new BpeTrainer(r.Get(vocabSize)).Train(texts);
            OutputFolder.Write(r.Get(outDir), temp => { BpeTrainer.Save(model, temp); return 0; });
            r.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"tokenizer: {model.VocabSize} tokens ({model.Merges.Count} merges) from {r.Get(data) ?? BuiltinCorpusName(r.Get(corpusSize))} in {clock.Elapsed.TotalSeconds:F1} s → {r.Get(outDir)}"));
            if (model.VocabSize < r.Get(vocabSize))
                r.Out.WriteLine($"tokenizer: stopped at {model.VocabSize} < --vocab-size {r.Get(vocabSize)}: no pair occurs twice any more");
            return 0;
        });
        return cmd;
    }

    private static string BuiltinCorpusName(int size) => $"the built-in corpus ({size} reviews)";
}
