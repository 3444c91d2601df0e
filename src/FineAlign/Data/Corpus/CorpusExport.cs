using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;

namespace FineAlign.Data.Corpus;

/// <summary>
/// Writes the built-in corpus in the formats the trainers read. All files are UTF-8 without BOM with "\n" line ends,
/// so the same (seed, count, evalFraction) gives byte-identical files on every OS.
/// Files written by <see cref="WriteAll"/>:
/// <list type="bullet">
/// <item><c>pretrain.txt</c> — one review per line (all reviews).</item>
/// <item><c>sft_train.jsonl</c>, <c>sft_eval.jsonl</c> — <c>{"prompt": opening, "completion": rest}</c>; a review goes
/// to eval iff its prompt is held out (<see cref="ReviewCorpus.IsEvalPrompt"/>), so eval prompts are never trained on.</item>
/// <item><c>prompts_train.jsonl</c>, <c>prompts_eval.jsonl</c> — distinct openings <c>{"prompt": ...}</c> for RL/eval.</item>
/// <item><c>reviews.jsonl</c> — full labels: text, prompt, stars, true_reward and words with start/length/valence.</item>
/// <item><c>preferences_train.jsonl</c>, <c>preferences_eval.jsonl</c> — <c>{"prompt","chosen","rejected"}</c> from positive revisions.</item>
/// </list>
/// </summary>
public static class CorpusExport
{
    public static readonly string[] FileNames =
    [
        "pretrain.txt", "sft_train.jsonl", "sft_eval.jsonl", "prompts_train.jsonl", "prompts_eval.jsonl",
        "reviews.jsonl", "preferences_train.jsonl", "preferences_eval.jsonl",
    ];

    private static readonly UTF8Encoding Utf8 = new(encoderShouldEmitUTF8Identifier: false);

    private static readonly JsonWriterOptions JsonOptions = new()
    {
        // Relaxed escaping keeps apostrophes readable ("didn't", not "didn\u0027t"); output is still valid JSON.
        Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        Indented = false,
    };

    /// <summary>Summary of what <see cref="WriteAll"/> wrote.</summary>
    public sealed record Summary(int Reviews, int SftTrain, int SftEval, int PromptsTrain, int PromptsEval, int Preferences);

    /// <summary>Generates <paramref name="count"/> reviews for <paramref name="seed"/> and writes every file into
    /// <paramref name="directory"/> (created if missing; existing files of the same names are overwritten).</summary>
    public static Summary WriteAll(string directory, int seed, int count, double evalFraction = 0.1,
        IProgress<ProgressUpdate>? progress = null, CancellationToken cancellationToken = default)
    {
        if (count < 1) throw new FineAlignException($"corpus: count must be at least 1, got {count}");
        if (evalFraction is < 0 or > 1 || double.IsNaN(evalFraction))
            throw new FineAlignException($"corpus: eval fraction must be in [0, 1], got {evalFraction}");
        Directory.CreateDirectory(directory);

        var reviews = new Review[count];
        for (int i = 0; i < count; i++)
        {
            if ((i & 1023) == 0)
            {
                cancellationToken.ThrowIfCancellationRequested();
                progress?.Report(new ProgressUpdate("generate", i, count));
            }
            reviews[i] = ReviewCorpus.GenerateOne(seed, i);
        }
        progress?.Report(new ProgressUpdate("generate", count, count));

        var isEval = reviews.Select(r => ReviewCorpus.IsEvalPrompt(r.Prompt, seed, evalFraction)).ToArray();
        var (trainPrompts, evalPrompts) = ReviewCorpus.SplitPrompts(reviews, seed, evalFraction);

        using (var w = Open(directory, "pretrain.txt"))
            foreach (var r in reviews) { w.Write(r.Text); w.Write('\n'); }

        int sftTrain = WriteJsonl(directory, "sft_train.jsonl", reviews.Where((_, i) => !isEval[i]), WriteSft);
        int sftEval = WriteJsonl(directory, "sft_eval.jsonl", reviews.Where((_, i) => isEval[i]), WriteSft);
        WriteJsonl(directory, "prompts_train.jsonl", trainPrompts, (j, p) => j.WriteString("prompt", p));
        WriteJsonl(directory, "prompts_eval.jsonl", evalPrompts, (j, p) => j.WriteString("prompt", p));
        WriteJsonl(directory, "reviews.jsonl", reviews, WriteReview);
        cancellationToken.ThrowIfCancellationRequested();
        int prefs = WriteJsonl(directory, "preferences_train.jsonl",
            ReviewCorpus.PreferencePairs(reviews.Where((_, i) => !isEval[i])), WritePreference);
        prefs += WriteJsonl(directory, "preferences_eval.jsonl",
            ReviewCorpus.PreferencePairs(reviews.Where((_, i) => isEval[i])), WritePreference);
        progress?.Report(new ProgressUpdate("write", 1, 1));
        return new Summary(count, sftTrain, sftEval, trainPrompts.Count, evalPrompts.Count, prefs);
    }

    /// <summary>Writes one JSON object per line; returns the number of lines.</summary>
    public static int WriteJsonl<T>(string directory, string fileName, IEnumerable<T> items, Action<Utf8JsonWriter, T> writeFields)
    {
        using var stream = new FileStream(Path.Combine(directory, fileName), FileMode.Create, FileAccess.Write);
        using var json = new Utf8JsonWriter(stream, JsonOptions);
        int n = 0;
        foreach (var item in items)
        {
            json.WriteStartObject();
            writeFields(json, item);
            json.WriteEndObject();
            json.Flush();
            json.Reset();
            stream.WriteByte((byte)'\n');
            n++;
        }
        return n;
    }

    public static void WriteSft(Utf8JsonWriter j, Review r)
    {
        j.WriteString("prompt", r.Prompt);
        j.WriteString("completion", r.Completion);
    }

    public static void WriteReview(Utf8JsonWriter j, Review r)
    {
        j.WriteNumber("index", r.Index);
        j.WriteString("text", r.Text);
        j.WriteString("prompt", r.Prompt);
        j.WriteNumber("stars", r.Stars);
        j.WriteNumber("true_reward", Round(r.TrueReward));
        j.WriteStartArray("words");
        foreach (var w in r.Words)
        {
            if (!w.IsValenced) continue;   // only sentiment-bearing words; the rest are 0 by definition
            j.WriteStartObject();
            j.WriteString("word", w.Word);
            j.WriteNumber("start", w.Start);
            j.WriteNumber("length", w.Length);
            j.WriteNumber("valence", Round(w.Valence));
            j.WriteEndObject();
        }
        j.WriteEndArray();
    }

    public static void WritePreference(Utf8JsonWriter j, PreferencePair p)
    {
        j.WriteString("prompt", p.Prompt);
        j.WriteString("chosen", p.Chosen);
        j.WriteString("rejected", p.Rejected);
    }

    // Four decimals: exact enough for labels and stable to print on every runtime.
    private static double Round(float v) => Math.Round((double)v, 4, MidpointRounding.ToEven);

    private static StreamWriter Open(string directory, string fileName) =>
        new(Path.Combine(directory, fileName), false, Utf8) { NewLine = "\n" };
}
