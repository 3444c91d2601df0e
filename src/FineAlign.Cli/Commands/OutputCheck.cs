namespace FineAlign.Cli.Commands;

/// <summary>
/// Checks an output folder before any work starts, so a bad --out fails in a second with a clear message instead of
/// after loading data and models (or, for training, with an OS message that does not say which option is wrong).
/// Nothing is left behind: missing folders are not created here.
/// </summary>
public static class OutputCheck
{
    /// <summary>
    /// <paramref name="folder"/> must be a folder or creatable as one: no part of its path may be a file, and the
    /// nearest existing ancestor must accept a new file (probed by creating and deleting one). As root, permission
    /// bits do not stop writes, so the probe is what tells.
    /// </summary>
    public static void Folder(string folder, string option)
    {
        string full = Path.GetFullPath(folder);
        if (File.Exists(full)) throw new FineAlignException($"{option} {folder}: exists and is a file, not a folder.");
        string? existing = full;
        while (existing is not null && !Directory.Exists(existing))
        {
            if (File.Exists(existing))
                throw new FineAlignException($"{option} {folder}: cannot create the folder because '{existing}' is a file.");
            existing = Path.GetDirectoryName(existing);
        }
        if (existing is null) throw new FineAlignException($"{option} {folder}: no existing parent folder.");
        string probe = Path.Combine(existing, $".finealign-write-test-{Guid.NewGuid().ToString("N")[..12]}");
        try
        {
            using (new FileStream(probe, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1, FileOptions.DeleteOnClose)) { }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new FineAlignException($"{option} {folder}: '{existing}' is not writable ({e.Message.ReplaceLineEndings(" ")}).");
        }
    }

    /// <summary>
    /// Refuses to start training when the disk holding <paramref name="folder"/> clearly cannot take the checkpoints:
    /// each holds the fp32 weights plus AdamW's two moments (3 × 4 bytes per parameter), <paramref name="keep"/> of them
    /// plus one being written and the final model. Free space can still run out later (other writers); that fails
    /// with an I/O error and the last complete checkpoint stays usable.
    /// </summary>
    public static void DiskSpace(string folder, long parameters, int? keep, string option)
    {
        string? existing = Path.GetFullPath(folder);
        while (existing is not null && !Directory.Exists(existing)) existing = Path.GetDirectoryName(existing);
        if (existing is null) return;
        long free;
        try { free = new DriveInfo(existing).AvailableFreeSpace; }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException) { return; }
        double need = parameters * 12.0 * ((keep ?? 3) + 1) + parameters * 4.0;
        if (free < need)
            throw new FineAlignException(
                $"{option} {folder}: only {free / 1e6:F1} MB free on that disk, about {need / 1e6:F1} MB needed for checkpoints and the final model " +
                "(free space, lower --save-total-limit, or choose another --out).");
    }
}
