namespace FineAlign.Cli;

/// <summary>
/// Writes a command's output files all-or-nothing: into a hidden temporary sibling folder first, then moved into
/// place only when every file is complete. On error the temporary folder is deleted and the target is untouched.
/// </summary>
public static class OutputFolder
{
    public static T Write<T>(string outDir, Func<string, T> write)
    {
        string full = Path.GetFullPath(outDir);
        if (File.Exists(full)) throw new FineAlignException($"output path '{outDir}' is a file, expected a folder");
        string parent = Path.GetDirectoryName(full) ?? throw new FineAlignException($"output path '{outDir}' has no parent folder");
        try { Directory.CreateDirectory(parent); }
        catch (IOException ex) { throw new FineAlignException($"cannot create the folder for '{outDir}': {ex.Message}", ex); }

        string temp = Path.Combine(parent, $".{Path.GetFileName(full)}.tmp-{Guid.NewGuid():N}"[..^20]);
        Directory.CreateDirectory(temp);
        try
        {
            T result = write(temp);
            if (!Directory.Exists(full))
                Directory.Move(temp, full);          // atomic on one file system
            else
            {
                foreach (var file in Directory.EnumerateFiles(temp))
                    File.Move(file, Path.Combine(full, Path.GetFileName(file)), overwrite: true);
                Directory.Delete(temp, recursive: true);
            }
            return result;
        }
        catch
        {
            try { if (Directory.Exists(temp)) Directory.Delete(temp, recursive: true); } catch (IOException) { }
            throw;
        }
    }
}

/// <summary>
/// Claims a training command's --out before its action runs (<see cref="FineAlign.Training.RunFolder"/>: lock, same-command
/// check, resume checks) and releases it when the action ends. Attached by <see cref="CliApp"/> to every command that
/// has both --out and --resume, which also gain --overwrite-output-dir (TRL's name) and --allow-thread-change.
/// </summary>
internal static class RunFolderGuard
{
    public static void Attach(RecipeCommand cmd)
    {
        cmd.Declare("--overwrite-output-dir", false,
            "Start fresh in an --out that holds files: delete an earlier run's outputs (checkpoints, model, metrics, TensorBoard logs) " +
            "and write over files of a run's names. Without it a non-empty folder that is not this command's run is refused.");
        cmd.Declare("--allow-thread-change", false,
            "Resume even though --threads differs from the checkpoint's (the continued curve is then not bit-identical to an uninterrupted run).");
        var inner = cmd.Action ?? throw new InvalidOperationException($"{cmd.Name}: set the action before attaching the run-folder guard");
        cmd.Action = new Guarded(cmd, inner);
    }

    private sealed class Guarded(RecipeCommand cmd, System.CommandLine.Invocation.CommandLineAction inner)
        : System.CommandLine.Invocation.AsynchronousCommandLineAction
    {
        public override async Task<int> InvokeAsync(System.CommandLine.ParseResult parseResult, CancellationToken ct = default)
        {
            var recipe = Recipe.Load(cmd, parseResult);
            var v = recipe.Values;
            T? Get<T>(string key) => v.TryGetValue(key, out var o) && o is T t ? t : default;
            int threads = Get<int>("threads");
            var request = new FineAlign.Training.RunFolderRequest
            {
                Folder = Get<string>("out") ?? throw new UsageException("--out is required"),
                Command = cmd.Name,
                Resume = Get<bool>("resume"),
                ResumeFrom = Get<string>("resume-from"),
                OverwriteOutputDir = Get<bool>("overwrite-output-dir"),
                AllowThreadChange = Get<bool>("allow-thread-change"),
                TorchThreads = v.ContainsKey("threads") ? (threads > 0 ? threads : TorchSharp.torch.get_num_threads()) : null,
                MaxSteps = v.TryGetValue("max-steps", out var ms) && ms is int m ? m : v.TryGetValue("steps", out var st) && st is int n ? n : null,
            };
            using var claim = FineAlign.Training.RunFolder.Claim(request);
            foreach (var notice in claim.Notices) recipe.Error.WriteLine(notice);
            return inner switch
            {
                System.CommandLine.Invocation.AsynchronousCommandLineAction a => await a.InvokeAsync(parseResult, ct),
                System.CommandLine.Invocation.SynchronousCommandLineAction s => s.Invoke(parseResult),
                _ => throw new InvalidOperationException($"unsupported action type {inner.GetType().Name}"),
            };
        }
    }
}
