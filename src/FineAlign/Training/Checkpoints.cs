using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.RegularExpressions;

namespace FineAlign.Training;

/// <summary>The trainer's bookkeeping, saved as trainer_state.json in every checkpoint.</summary>
public sealed class TrainerState
{
    /// <summary>Completed optimizer steps (the scheduler position: the next update uses LR index GlobalStep).</summary>
    public long GlobalStep { get; set; }
    public long MaxSteps { get; set; }
    /// <summary>Fractional epochs consumed (micro-batches seen / batches per epoch).</summary>
    public double Epoch { get; set; }
    /// <summary>Next batch to read: epoch and batch index inside its seeded permutation.</summary>
    public int DataEpoch { get; set; }
    public int DataBatchIndex { get; set; }
    public long MicroBatchesSeen { get; set; }
    public int Seed { get; set; }
    /// <summary>State of the trainer's managed RNG (<see cref="SplitMix64.State"/>).</summary>
    public ulong RngState { get; set; }
    public int TorchNumThreads { get; set; }
    public double TotalTokens { get; set; }
    public double ElapsedSeconds { get; set; }
    /// <summary>The logging window not yet written (steps since the last log): sum of step losses,
    /// step count, tokens and metric sums. Checkpointed so a resumed run logs the same averages.</summary>
    public double WindowLossSum { get; set; }
    public int WindowSteps { get; set; }
    public double WindowTokens { get; set; }
    public Dictionary<string, double> WindowMetrics { get; set; } = new();
    /// <summary>Every logged metrics entry so far (the JSONL lines), in order.</summary>
    public List<Dictionary<string, double>> LogHistory { get; set; } = new();

    internal static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseLower) },
    };

    public void Save(string path) => File.WriteAllText(path, JsonSerializer.Serialize(this, Json));

    public static TrainerState Load(string path)
    {
        try
        {
            return JsonSerializer.Deserialize<TrainerState>(File.ReadAllText(path), Json)
                   ?? throw new FineAlignException($"{path}: empty trainer state");
        }
        catch (JsonException e)
        {
            throw new FineAlignException($"{path}: not a valid trainer_state.json ({e.Message})", e);
        }
    }
}

/// <summary>
/// checkpoint-{step}/ folders under an output folder. A checkpoint is written into a hidden
/// ".tmp-checkpoint-*" folder and renamed into place (atomic on one filesystem), so a killed run
/// never leaves a half-written checkpoint-{step}; readers only consider complete, renamed folders.
/// </summary>
public static class CheckpointStore
{
    public const string StateFile = "trainer_state.json";
    public const string ModelFile = "model.bin";
    public const string OptimizerFile = "optimizer.bin";
    public const string RngFile = "rng_state.bin";
    public const string ArgsFile = "training_args.json";
    private const string TempPrefix = ".tmp-checkpoint-";
    private static readonly Regex Name = new(@"^checkpoint-(\d+)$", RegexOptions.CultureInvariant);

    public static string PathFor(string outputDir, long step) => Path.Combine(outputDir, $"checkpoint-{step}");

    /// <summary>Complete checkpoints, oldest first.</summary>
    public static IReadOnlyList<(long Step, string Path)> List(string outputDir)
    {
        if (!Directory.Exists(outputDir)) return Array.Empty<(long, string)>();
        var found = new List<(long, string)>();
        foreach (var dir in Directory.GetDirectories(outputDir))
        {
            var m = Name.Match(System.IO.Path.GetFileName(dir));
            if (m.Success && File.Exists(System.IO.Path.Combine(dir, StateFile)))
                found.Add((long.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture), dir));
        }
        found.Sort((a, b) => a.Item1.CompareTo(b.Item1));
        return found;
    }

    /// <summary>The newest complete checkpoint, or null.</summary>
    public static string? Latest(string outputDir) => List(outputDir) is { Count: > 0 } l ? l[^1].Path : null;

    /// <summary>
    /// Writes checkpoint-{step} via <paramref name="write"/> (which fills the given empty folder),
    /// commits it by rename, then prunes the oldest beyond <paramref name="keepLast"/>.
    /// </summary>
    public static string Save(string outputDir, long step, Action<string> write, int? keepLast = null)
        => Save(outputDir, step, write, keepLast, beforeCommit: null);

    /// <param name="beforeCommit">Test hook: runs after the contents are written, before the rename.</param>
    internal static string Save(string outputDir, long step, Action<string> write, int? keepLast, Action<string>? beforeCommit)
    {
        Directory.CreateDirectory(outputDir);
        string tmp = System.IO.Path.Combine(outputDir, $"{TempPrefix}{step}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(tmp);
        write(tmp);
        beforeCommit?.Invoke(tmp);

        string final = PathFor(outputDir, step);
        if (Directory.Exists(final))
        {
            // Re-saving a step (e.g. after a resume): move the old one aside first so that at
            // every instant either the old or the new complete folder carries the name.
            string old = System.IO.Path.Combine(outputDir, $"{TempPrefix}{step}-old-{Guid.NewGuid():N}");
            Directory.Move(final, old);
            Directory.Move(tmp, final);
            Directory.Delete(old, true);
        }
        else
        {
            Directory.Move(tmp, final);
        }

        if (keepLast is int keep)
        {
            var all = List(outputDir);
            for (int i = 0; i < all.Count - keep; i++) Delete(outputDir, all[i].Path);
        }
        return final;
    }

    /// <summary>
    /// Removes temp folders left by a killed run (call before training starts): half-written checkpoints, and the
    /// hidden folders of a final model save that was killed (the resumed run saves the model again).
    /// </summary>
    public static void CleanTemporary(string outputDir)
    {
        if (!Directory.Exists(outputDir)) return;
        foreach (var dir in Directory.GetDirectories(outputDir, TempPrefix + "*"))
            Directory.Delete(dir, true);
        FineAlign.Models.ModelIO.CleanInterruptedWrites(outputDir);
    }

    // Rename first, so a crash mid-delete leaves a temp folder, never a damaged checkpoint-N.
    private static void Delete(string outputDir, string dir)
    {
        string doomed = System.IO.Path.Combine(outputDir, $"{TempPrefix}deleted-{Guid.NewGuid():N}");
        Directory.Move(dir, doomed);
        Directory.Delete(doomed, true);
    }
}
