using System.Text.Json;

namespace FineAlign.Data;

/// <summary>How <see cref="ImdbTaskFiles.Write"/> cuts the reviews into prompts and texts.</summary>
public sealed record ImdbTaskOptions
{
    public int Seed { get; init; } = 42;
    /// <summary>Prompt length range in words (TRL's gpt2-imdb example: 2–8 GPT-2 tokens).</summary>
    public int MinPrefixWords { get; init; } = 3;
    public int MaxPrefixWords { get; init; } = 8;
    /// <summary>Continuation words kept in the classifier, TLCR and offline files: about what a policy writes in evaluation.</summary>
    public int ContinuationWords { get; init; } = 40;
    public double ValidationFraction { get; init; } = 0.05;
    public double TestFraction { get; init; } = 0.15;
    public double JudgeFraction { get; init; } = 0.25;
    /// <summary>At most this many reviews are read (0 = all): the quick demo's size.</summary>
    public int MaxReviews { get; init; }
}

/// <summary>What <see cref="ImdbTaskFiles.Write"/> wrote: the split and each file's path by name.</summary>
public sealed record ImdbTaskManifest(ImdbSplit Split, IReadOnlyDictionary<string, string> Files);

/// <summary>
/// Writes the files of the IMDB positive-continuation task from a split, each in a layout an ordinary
/// <c>finealign</c> command reads, so every stage of the pipeline can be rerun on them (docs/IMDB.md):
/// <list type="bullet">
/// <item><c>train-text</c>, <c>validation-text</c>, <c>judge-text</c>: <c>{"text"}</c> (tokenizer train, pretrain).</item>
/// <item><c>classifier-train</c>, <c>classifier-validation</c>, <c>classifier-test</c>, <c>judge-train</c>: prefix + continuation
/// (cut to <see cref="ImdbTaskOptions.ContinuationWords"/>) + boolean label (<c>rm --objective classification</c>).</item>
/// <item><c>prompts-train</c>, <c>prompts-test</c>: <c>{"prompt"}</c> (ppo, bon, evaluation).</item>
/// <item><c>offline-train</c>: prefix + human continuation (<c>alol --reward</c>, which scores it).</item>
/// <item><c>tlcr-train</c>, <c>tlcr-validation</c>: prefix + continuation + labelled spans (<c>tlcr-label</c>), when a span labeller is given.</item>
/// <item><c>split</c>: <c>split.json</c>, the source line numbers of each part.</item>
/// </list>
/// The judge part appears only in <c>judge-*</c> files; nothing else is written from it.
/// </summary>
public static class ImdbTaskFiles
{
    public const string ManifestFile = "split.json";

    /// <param name="spans">Token-label spans (start, end, ±1) of a continuation given the review's label; null = no TLCR files.</param>
    public static ImdbTaskManifest Write(string reviewsPath, string outDir, ImdbTaskOptions o,
        Func<string, bool, IEnumerable<(int Start, int End, int Label)>>? spans = null)
    {
        var reviews = ImdbReader.Read(reviewsPath);
        if (o.MaxReviews > 0 && reviews.Count > o.MaxReviews) reviews = reviews.Take(o.MaxReviews).ToList();
        var split = ImdbSplitter.Split(reviews, o.Seed, o.ValidationFraction, o.TestFraction, o.JudgeFraction);
        Directory.CreateDirectory(outDir);
        var files = new Dictionary<string, string>();
        string F(string name) => files[name] = Path.Combine(outDir, name + ".jsonl");

        (string Prefix, string Continuation) Cut(LabelledReview r)
        {
            var (prefix, rest) = ReviewPrefix.Cut(r.Text, ReviewPrefix.Length(o.Seed, (int)r.Line, o.MinPrefixWords, o.MaxPrefixWords));
            return (prefix, ReviewPrefix.FirstWords(rest, o.ContinuationWords));
        }
        void Texts(string name, IEnumerable<LabelledReview> part) => WriteLines(F(name), part.Select(r => new Dictionary<string, object> { ["text"] = r.Text }));
        void Labelled(string name, IEnumerable<LabelledReview> part) => WriteLines(F(name), part.Select(r =>
        {
            var (p, c) = Cut(r);
            return new Dictionary<string, object> { ["prompt"] = p, ["completion"] = c, ["label"] = r.Positive };
        }).Where(d => ((string)d["completion"]).Trim().Length > 0));
        void Prompts(string name, IEnumerable<LabelledReview> part) => WriteLines(F(name), part.Select(r => new Dictionary<string, object> { ["prompt"] = Cut(r).Prefix }));

        Texts("train-text", split.Train);
        Texts("validation-text", split.Validation);
        Texts("judge-text", split.Judge);
        Labelled("classifier-train", split.Train);
        Labelled("classifier-validation", split.Validation);
        Labelled("classifier-test", split.Test);
        Labelled("judge-train", split.Judge);
        Prompts("prompts-train", split.Train);
        Prompts("prompts-test", split.Test);
        WriteLines(F("offline-train"), split.Train.Select(r =>
        {
            var (p, c) = Cut(r);
            return new Dictionary<string, object> { ["prompt"] = p, ["completion"] = c };
        }).Where(d => ((string)d["completion"]).Trim().Length > 0));
        if (spans is not null)
        {
            IEnumerable<Dictionary<string, object>> Spans(IEnumerable<LabelledReview> part) => part.Select(r =>
            {
                var (p, c) = Cut(r);
                return new Dictionary<string, object>
                {
                    ["prompt"] = p, ["response"] = c,
                    ["spans"] = spans(c, r.Positive).Select(s => new Dictionary<string, int> { ["start"] = s.Start, ["end"] = s.End, ["label"] = s.Label }).ToList(),
                };
            }).Where(d => ((string)d["response"]).Trim().Length > 0);
            WriteLines(F("tlcr-train"), Spans(split.Train));
            WriteLines(F("tlcr-validation"), Spans(split.Validation));
        }
        files["split"] = Path.Combine(outDir, ManifestFile);
        AtomicFile.WriteAllText(files["split"], JsonSerializer.Serialize(new
        {
            source = reviewsPath, seed = o.Seed, reviews = reviews.Count,
            train = split.Train.Select(r => r.Line), validation = split.Validation.Select(r => r.Line),
            test = split.Test.Select(r => r.Line), judge = split.Judge.Select(r => r.Line),
        }));
        return new ImdbTaskManifest(split, files);
    }

    // Written to a temporary file and moved into place: an interrupted run leaves no half-written file.
    private static void WriteLines(string path, IEnumerable<object> rows)
    {
        string tmp = path + ".tmp";
        using (var w = new StreamWriter(tmp, false, new System.Text.UTF8Encoding(false)))
            foreach (var row in rows) w.WriteLine(JsonSerializer.Serialize(row));
        File.Move(tmp, path, overwrite: true);
    }
}
