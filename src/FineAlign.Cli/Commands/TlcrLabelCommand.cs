using FineAlign.Data.Corpus;
using FineAlign.Rewards;
using FineAlign.Text;
using FineAlign.Trainers;

namespace FineAlign.Cli.Commands;

/// <summary><c>finealign tlcr-label</c>: token labels from (original, revised) pairs or pre-labelled spans (TLCR step 1).</summary>
public static class TlcrLabelCommand
{
    public static RecipeCommand Create()
    {
        var cmd = new RecipeCommand("tlcr-label",
            "TLCR step 1: tokenise (original, revised) response pairs with the policy tokenizer, align them with a minimal " +
            "token edit script and label deleted/replaced original tokens -1, inserted/replacing revised tokens +1, kept tokens 0. " +
            "Input JSONL: {prompt, original, revised} or {prompt, response, spans: [{start, end, label}]} (char offsets). " +
            "Without --data it labels revision pairs of the built-in review corpus.");
        var data = cmd.Declare<string?>("--data", null, "Input JSONL (see above). Omitted: the built-in corpus (train split; --eval-out gets the held-out split).");
        var tokenizerDir = cmd.Declare<string?>("--tokenizer", null, "Folder with the policy's tokenizer files (e.g. the SFT model). Omitted: the built-in byte tokenizer.");
        var output = cmd.Declare("--out", "runs/tlcr/labels.jsonl", "Output JSONL: prompt, response, kind, input_ids, labels (one line per response).", alias: "-o");
        var evalOut = cmd.Declare<string?>("--eval-out", null, "Built-in corpus only: write the held-out split's labels here.");
        var corpus = CorpusFlags.Declare(cmd, "Reviews used from the built-in corpus.", 4000, 1);
        var corpusSize = corpus.Size;
        var corpusSeed = corpus.Seed;

        var runtime = RuntimeFlags.Declare(cmd);
        cmd.SetRecipeAction((r, ct) =>
        {
            runtime.Apply(r);
            TextTokenizer tokenizer = r.Get(tokenizerDir) is string dir ? TokenizerLoader.Load(dir) : new ByteTokenizer();
            string outPath = r.Get(output);
            var parent = Path.GetDirectoryName(Path.GetFullPath(outPath));
            if (parent is not null) Directory.CreateDirectory(parent);
            if (r.Get(data) is string path)
            {
                var items = TlcrLabeller.ReadInput(path, tokenizer).ToList(); // read fully first: a bad line leaves no output
                Write(r, outPath, items);
            }
            else
            {
                var pairs = BuiltinData.RevisionPairs(r.Get(corpusSeed), r.Get(corpusSize));
                Write(r, outPath, TlcrLabeller.Label(tokenizer, pairs.Where(p => !p.IsEval)).ToList());
                if (r.Get(evalOut) is string ev) Write(r, ev, TlcrLabeller.Label(tokenizer, pairs.Where(p => p.IsEval)).ToList());
            }
            return 0;
        });
        return cmd;
    }

    private static void Write(Recipe r, string path, List<LabelledResponse> items)
    {
        string tmp = path + ".tmp";
        TlcrLabeller.WriteJsonl(tmp, items);
        File.Move(tmp, path, overwrite: true);
        long pos = items.Sum(i => (long)i.Positives), neg = items.Sum(i => (long)i.Negatives), all = items.Sum(i => (long)i.Labels.Length);
        r.Out.WriteLine($"tlcr-label: {items.Count} labelled responses → {path} ({pos} positive, {neg} negative, {all - pos - neg} neutral tokens)");
    }
}
